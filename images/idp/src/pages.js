// Server-rendered pages: no script, no external asset, every value escaped.

export function escapeHtml(value) {
  return String(value)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

const STYLE = `
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f3f4f6;color:#111827;margin:0}
main{max-width:22rem;margin:4rem auto;background:#fff;border:1px solid #d1d5db;border-radius:8px;padding:1.5rem 1.75rem}
h1{font-size:1.25rem;margin:0 0 1rem}
label{display:block;font-size:.9rem;margin:.75rem 0 .25rem}
input[type=text],input[type=password]{box-sizing:border-box;width:100%;padding:.5rem;border:1px solid #9ca3af;border-radius:4px;font-size:1rem}
button{margin-top:1rem;padding:.5rem 1rem;border:0;border-radius:4px;background:#1d4ed8;color:#fff;font-size:1rem;cursor:pointer}
button.secondary{background:#e5e7eb;color:#111827;margin-left:.5rem}
.error{background:#fee2e2;border:1px solid #fca5a5;color:#991b1b;padding:.5rem;border-radius:4px}
.note{color:#4b5563;font-size:.85rem}
ul{padding-left:1.25rem}
`;

export function layout(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>
`;
}

export function loginPage({ action, username = '', error = '' }) {
  return layout('Opsbook sign-in', `<h1>Opsbook sign-in</h1>
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="${escapeHtml(action)}" autocomplete="off">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="${escapeHtml(username)}" autocapitalize="none" autofocus required>
<label for="password">Password</label>
<input type="password" id="password" name="password" required>
<button type="submit">Sign in</button>
</form>
<p class="note">Demo identity provider: for demonstrations and tests only.</p>`);
}

const SCOPE_TEXT = {
  openid: 'know who you are (your username)',
  profile: 'see your name',
  email: 'see your e-mail address',
  groups: 'see your groups',
  offline_access: 'keep access while you are away',
};

export function consentPage({ action, clientName, username, scopes }) {
  const items = scopes
    .map((scope) => `<li><code>${escapeHtml(scope)}</code>${SCOPE_TEXT[scope] ? `: ${escapeHtml(SCOPE_TEXT[scope])}` : ''}</li>`)
    .join('\n');
  return layout('Opsbook sign-in: allow access', `<h1>${escapeHtml(clientName)} asks to:</h1>
<ul>
${items}
</ul>
<p class="note">Signed in as <strong>${escapeHtml(username)}</strong>.</p>
<form method="post" action="${escapeHtml(action)}">
<input type="hidden" name="consent" value="1">
<button type="submit">Allow</button>
<button type="submit" class="secondary" name="deny" value="1">Deny</button>
</form>`);
}

export function errorPage({ title, message }) {
  return layout(title, `<h1>${escapeHtml(title)}</h1>
<p class="error">${escapeHtml(message)}</p>`);
}
