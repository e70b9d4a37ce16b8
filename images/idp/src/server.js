// Opsbook's demo OpenID Connect provider: panva's oidc-provider with a password-checking login form,
// a consent page, refresh tokens, a `groups` claim and demo accounts read from a JSON file.
// For demonstrations and tests only; production uses the team's own identity provider.
import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';

import Provider from 'oidc-provider';

import { AccountStore, AccountsError } from './accounts.js';
import { HEALTH_PORT, SettingError, loadSettings } from './config.js';
import MemoryStore from './store.js';
import {
  consentPage, errorPage, layout, loginPage,
} from './pages.js';

const log = {
  info: (message) => process.stdout.write(`${new Date().toISOString()} INFO ${message}\n`),
  warn: (message) => process.stdout.write(`${new Date().toISOString()} WARN ${message}\n`),
  error: (message) => process.stderr.write(`${new Date().toISOString()} ERROR ${message}\n`),
};

// ---------------------------------------------------------------------------------------------
// Settings and accounts: any problem here prints one line and exits 1.

let settings;
let accounts;
try {
  settings = loadSettings(process.env);
  accounts = new AccountStore(settings.accountsFile, log);
  try {
    accounts.load();
  } catch (err) {
    if (err instanceof AccountsError) throw new SettingError(`IDP_ACCOUNTS_FILE: ${err.message}`);
    throw err;
  }
} catch (err) {
  if (!(err instanceof SettingError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Passwords: one shared demo password, compared in constant time (digests have equal length).

const passwordDigest = crypto.createHash('sha256').update(settings.demoPassword, 'utf8').digest();

function passwordMatches(candidate) {
  const digest = crypto.createHash('sha256').update(candidate, 'utf8').digest();
  return crypto.timingSafeEqual(digest, passwordDigest);
}

// ---------------------------------------------------------------------------------------------
// The provider.

// A fresh RS256 signing key at each start: ID tokens signed before a restart no longer verify,
// and (the token store being in memory) every issued access and refresh token is gone as well.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: crypto.randomBytes(12).toString('base64url'),
  alg: 'RS256',
  use: 'sig',
};

const CLIENT_NAME = 'Opsbook hub';
const callback = new URL(settings.callbackUrl);

function claimsOf(account) {
  return {
    sub: account.username,
    preferred_username: account.username,
    name: account.name,
    email: account.email,
    email_verified: true,
    groups: [...account.groups],
  };
}

function sendPage(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('X-Frame-Options', 'DENY');
  // No form-action directive: browsers apply it to the redirects that follow a form post, and
  // the consent form's redirect chain ends at the hub's callback URL on another origin.
  res.setHeader('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'");
  res.end(html);
}

function koaPage(ctx, status, html) {
  ctx.status = status;
  ctx.type = 'html';
  ctx.set('Cache-Control', 'no-store');
  ctx.body = html;
}

const provider = new Provider(settings.issuer, {
  adapter: MemoryStore,
  clients: [{
    client_id: settings.clientId,
    client_secret: settings.clientSecret,
    client_name: CLIENT_NAME,
    redirect_uris: [settings.callbackUrl],
    post_logout_redirect_uris: [...new Set([
      `${callback.origin}/`,
      new URL('.', callback).href, // e.g. http://127.0.0.1:8000/hub/
      new URL('login', callback).href, // e.g. http://127.0.0.1:8000/hub/login
    ])],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  clientAuthMethods: ['client_secret_basic'],
  pkce: { methods: ['S256'], required: () => true },
  responseTypes: ['code'],
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  async findAccount(ctx, sub) {
    // Called for every authorization, code exchange, refresh and userinfo request: the file is
    // re-read here when it changed, and an account removed from it can no longer get tokens.
    const account = accounts.get(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return claimsOf(accounts.get(sub) ?? account);
      },
    };
  },
  // Refresh tokens for every code grant of the client, without asking for offline_access.
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  // Tokens are bound to the provider's browser session (as without offline_access): signing out
  // at /session/end revokes them, so the hub's next refresh sends the user to sign in again. The
  // session lives at least as long as a refresh token (ttl.Session below).
  async expiresWithSession() {
    return true;
  },
  // No rotation: a refresh token stays valid, and reusable, until IDP_REFRESH_TOKEN_TTL after the
  // sign-in, then the user signs in again. Rotation's reuse detection would revoke the whole grant
  // when two hub requests refresh the same user at once.
  rotateRefreshToken: false,
  // No clock skew allowance: an access token is refused from the second it expires (the default
  // 15 s would keep it usable 15 s longer). Nothing here verifies client-made JWTs, which is what
  // the allowance is otherwise for.
  clockTolerance: 0,
  ttl: {
    AccessToken: settings.accessTokenTtl,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: settings.refreshTokenTtl,
    Interaction: 3600,
    Session: Math.max(settings.refreshTokenTtl, 14 * 24 * 3600),
    Grant: Math.max(settings.refreshTokenTtl, 14 * 24 * 3600),
  },
  jwks: { keys: [signingKey] },
  cookies: {
    // Prefixed: the hub runs on the same host name, and cookies do not care about ports.
    names: {
      session: 'idp_session',
      interaction: 'idp_interaction',
      resume: 'idp_interaction_resume',
    },
    keys: [settings.cookieSecret],
    // Lax rather than the default None for the long-lived one: browsers drop SameSite=None cookies
    // that are not Secure, and the demo issuer is plain http.
    long: {
      signed: true, httpOnly: true, overwrite: true, sameSite: 'lax',
    },
    short: {
      signed: true, httpOnly: true, overwrite: true, sameSite: 'lax',
    },
  },
  interactions: {
    url: (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        koaPage(ctx, 200, layout('Opsbook sign-out', `<h1>Sign out of Opsbook sign-in?</h1>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" class="secondary" form="op.logoutForm">No, stay signed in</button>`));
      },
      async postLogoutSuccessSource(ctx) {
        koaPage(ctx, 200, layout('Opsbook sign-out', `<h1>Signed out</h1>
<p>You are signed out of Opsbook sign-in.</p>`));
      },
    },
  },
  async renderError(ctx, out) {
    const message = out.error_description ? `${out.error}: ${out.error_description}` : String(out.error);
    koaPage(ctx, ctx.status || 400, errorPage({ title: 'Opsbook sign-in: error', message }));
  },
});

provider.on('server_error', (ctx, err) => log.error(`server_error: ${err.stack || err}`));
// Refused requests (bad client credentials, expired or revoked tokens, a removed account...):
// the hub meets some of these in normal operation, e.g. userinfo with an expired access token.
for (const event of ['authorization.error', 'grant.error', 'userinfo.error', 'end_session.error']) {
  provider.on(event, (ctx, err) => {
    const detail = [err.message, err.error_description, err.error_detail].filter(Boolean).join(': ');
    log.warn(`${event}: ${detail}`);
  });
}

// ---------------------------------------------------------------------------------------------
// Interactions: the login form and the consent page at /interaction/:uid.

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function readForm(req, limit = 16 * 1024) {
  const type = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw new HttpError(415, 'The form must be posted as application/x-www-form-urlencoded.');
  }
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, 'The form is too large.');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function currentInteraction(req, res, uid) {
  let interaction;
  try {
    interaction = await provider.interactionDetails(req, res);
  } catch (err) {
    if (err.name !== 'SessionNotFound') throw err;
  }
  if (!interaction || interaction.uid !== uid) {
    throw new HttpError(400, 'This sign-in page has expired or belongs to another browser. Go back to Opsbook and sign in again.');
  }
  return interaction;
}

function requestedScopes(interaction) {
  const requested = String(interaction.params.scope || '').split(' ').filter(Boolean);
  return [...new Set(requested)];
}

function redirect(res, location) {
  res.statusCode = 303;
  res.setHeader('Location', location);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', '0');
  res.end();
}

function clientAddress(req) {
  return req.socket.remoteAddress || '?';
}

async function showInteraction(req, res, uid) {
  const interaction = await currentInteraction(req, res, uid);
  const action = `/interaction/${encodeURIComponent(uid)}`;
  switch (interaction.prompt.name) {
    case 'login':
      sendPage(res, 200, loginPage({ action, username: interaction.params.login_hint || '' }));
      return;
    case 'consent':
      sendPage(res, 200, consentPage({
        action,
        clientName: CLIENT_NAME,
        username: interaction.session?.accountId || '',
        scopes: requestedScopes(interaction),
      }));
      return;
    default:
      throw new HttpError(400, `Unsupported step '${interaction.prompt.name}'.`);
  }
}

async function login(req, res, interaction, form, action) {
  const username = String(form.get('username') || '').trim().toLowerCase();
  const password = String(form.get('password') || '');
  const account = username ? accounts.get(username) : undefined;
  const passwordOk = passwordMatches(password); // checked whether or not the account exists
  if (!account || !passwordOk) {
    log.info(`login failed: user ${JSON.stringify(username.slice(0, 64))} (${account ? 'wrong password' : 'unknown user'}) from ${clientAddress(req)}`);
    sendPage(res, 401, loginPage({ action, username, error: 'Wrong username or password.' }));
    return;
  }
  log.info(`login: ${account.username} signed in from ${clientAddress(req)}`);
  const returnTo = await provider.interactionResult(req, res, {
    login: { accountId: account.username },
  }, { mergeWithLastSubmission: false });
  redirect(res, returnTo);
}

async function consent(req, res, interaction, form) {
  const accountId = interaction.session?.accountId;
  if (form.get('deny')) {
    log.info(`consent: ${accountId} denied ${interaction.params.client_id}`);
    const returnTo = await provider.interactionResult(req, res, {
      error: 'access_denied',
      error_description: 'End-User denied the authorization request',
    }, { mergeWithLastSubmission: false });
    redirect(res, returnTo);
    return;
  }
  const { details } = interaction.prompt;
  const grant = interaction.grantId
    ? await provider.Grant.find(interaction.grantId)
    : new provider.Grant({ accountId, clientId: interaction.params.client_id });
  if (!grant) throw new HttpError(400, 'This authorization has expired. Go back to Opsbook and sign in again.');
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  if (details.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  log.info(`consent: ${accountId} allowed ${interaction.params.client_id} (${requestedScopes(interaction).join(' ')})`);
  const result = { consent: interaction.grantId ? {} : { grantId } };
  const returnTo = await provider.interactionResult(req, res, result, { mergeWithLastSubmission: true });
  redirect(res, returnTo);
}

async function submitInteraction(req, res, uid) {
  const form = await readForm(req);
  const interaction = await currentInteraction(req, res, uid);
  const action = `/interaction/${encodeURIComponent(uid)}`;
  switch (interaction.prompt.name) {
    case 'login':
      await login(req, res, interaction, form, action);
      return;
    case 'consent':
      await consent(req, res, interaction, form);
      return;
    default:
      throw new HttpError(400, `Unsupported step '${interaction.prompt.name}'.`);
  }
}

async function handleInteraction(req, res, uid) {
  try {
    if (req.method === 'GET' || req.method === 'HEAD') {
      await showInteraction(req, res, uid);
    } else if (req.method === 'POST') {
      await submitInteraction(req, res, uid);
    } else {
      res.setHeader('Allow', 'GET, POST');
      throw new HttpError(405, 'Method not allowed.');
    }
  } catch (err) {
    if (res.headersSent) {
      log.error(`interaction ${uid}: ${err.stack || err}`);
      res.destroy();
      return;
    }
    if (err instanceof HttpError) {
      sendPage(res, err.status, errorPage({ title: 'Opsbook sign-in', message: err.message }));
    } else {
      log.error(`interaction ${uid}: ${err.stack || err}`);
      sendPage(res, 500, errorPage({ title: 'Opsbook sign-in', message: 'Something went wrong; see the provider log.' }));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The HTTP server: /healthz and the interactions here, everything else to oidc-provider.
// oidc-provider builds the URLs it returns (discovery endpoints, redirects) from the request's
// Host header and keeps `iss` = IDP_ISSUER, so the same provider answers the browser at the
// public URL and the hub's container at http://idp:9000.

const providerCallback = provider.callback();
const INTERACTION_PATH = /^\/interaction\/([A-Za-z0-9_-]{1,64})\/?$/;

function pathOf(req) {
  return (req.url || '/').split('?')[0];
}

function answerHealthy(req, res) {
  res.statusCode = 200;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(req.method === 'HEAD' ? undefined : 'ok');
}

function handle(req, res) {
  const started = process.hrtime.bigint();
  const path = pathOf(req);
  if (path !== '/healthz') {
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log.info(`${req.method} ${path} ${res.statusCode} ${ms.toFixed(1)}ms`);
    });
  }
  if (path === '/healthz') {
    answerHealthy(req, res);
    return;
  }
  const match = INTERACTION_PATH.exec(path);
  if (match) {
    handleInteraction(req, res, match[1]);
    return;
  }
  providerCallback(req, res);
}

// HTTPS when the issuer is https (settings.tls: the certificate make up made), else plain HTTP.
const server = settings.tls ? https.createServer(settings.tls, handle) : http.createServer(handle);

server.on('error', (err) => {
  process.stderr.write(`IDP_PORT: cannot listen on 0.0.0.0:${settings.port} (${err.code || err.message})\n`);
  process.exit(1);
});

// The health check's listener: /healthz only, plain HTTP, loopback only (see HEALTH_PORT).
const healthServer = http.createServer((req, res) => {
  if (pathOf(req) === '/healthz') {
    answerHealthy(req, res);
  } else {
    res.statusCode = 404;
    res.end();
  }
});
healthServer.on('error', (err) => {
  process.stderr.write(`idp: cannot listen on 127.0.0.1:${HEALTH_PORT} for the health check (${err.code || err.message})\n`);
  process.exit(1);
});
healthServer.listen(HEALTH_PORT, '127.0.0.1');

server.listen(settings.port, '0.0.0.0', () => {
  log.info(`opsbook idp: issuer ${settings.issuer}, listening on 0.0.0.0:${settings.port} (${settings.tls ? 'https' : 'http'}), `
    + `client ${settings.clientId} -> ${settings.callbackUrl}, ${accounts.accounts.size} accounts from ${settings.accountsFile}, `
    + `access token ${settings.accessTokenTtl}s, refresh token ${settings.refreshTokenTtl}s`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    log.info(`${signal}: stopping`);
    server.close();
    healthServer.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
