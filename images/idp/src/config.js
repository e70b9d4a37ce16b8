// Settings from the environment, each checked at start. A bad one throws a SettingError whose
// message is the one line printed to stderr before exiting 1: the variable's name, what it
// expected and what it got (secrets are described by their length, never echoed).

import { readFileSync } from 'node:fs';

export class SettingError extends Error {}

// Where /healthz also answers, in plain HTTP on loopback only: the image's HEALTHCHECK (http-check,
// bash) asks there, since it speaks no TLS and starting Node.js for each check cost 0.24 CPU-s.
export const HEALTH_PORT = 9001;

const UNRESERVED = /^[A-Za-z0-9._~-]+$/;

function quote(value) {
  return `'${String(value).replace(/[\r\n]/g, ' ')}'`;
}

function fail(name, expected, got) {
  throw new SettingError(`${name}: expected ${expected}, got ${got}`);
}

// Unset and empty both mean "not given" (docker compose turns ${VAR:-} into an empty string).
function raw(env, name) {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

function required(env, name, expected) {
  const value = raw(env, name);
  if (value === undefined) fail(name, expected, "''");
  return value;
}

function parseHttpUrl(value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.username || url.password || url.hash || /\s/.test(value)) return undefined;
  return url;
}

function issuer(env) {
  const name = 'IDP_ISSUER';
  const expected = 'an http(s) URL with no path, query or fragment (e.g. http://127.0.0.1:9000)';
  const value = required(env, name, expected);
  const url = parseHttpUrl(value);
  if (!url || url.pathname !== '/' || url.search || value.endsWith('?')) fail(name, expected, quote(value));
  return url.origin; // no trailing slash: the issuer exactly as clients should compare it
}

function callbackUrl(env) {
  const name = 'OAUTH_CALLBACK_URL';
  const expected = 'an http(s) URL with no fragment (e.g. http://127.0.0.1:8000/hub/oauth_callback)';
  const value = required(env, name, expected);
  if (!parseHttpUrl(value)) fail(name, expected, quote(value));
  return value; // kept verbatim: redirect_uri is compared as an exact string
}

function integer(env, name, fallback, min, max, what) {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  const expected = `${what} from ${min} to ${max}`;
  if (!/^[0-9]+$/.test(value)) fail(name, expected, quote(value));
  const number = Number(value);
  if (number < min || number > max) fail(name, expected, quote(value));
  return number;
}

function secret(env, name, minLength, charset) {
  const value = raw(env, name);
  const expected = charset
    ? `at least ${minLength} characters from A-Z a-z 0-9 - . _ ~ (e.g. openssl rand -hex 32)`
    : `at least ${minLength} characters`;
  if (value === undefined) fail(name, expected, 'an empty value');
  if (value.length < minLength) fail(name, expected, `${value.length} characters`);
  if (charset && !charset.test(value)) fail(name, expected, 'other characters');
  return value;
}

// An https issuer is served over https, with the certificate make up made for it (the demo
// authority's; scripts/init-secrets.sh): the browser and the hub reach the provider as the issuer
// says. Read here, so that a missing or unreadable file stops the start with its name.
function tls(env, issuerOrigin) {
  if (!issuerOrigin.startsWith('https:')) return undefined;
  const files = {
    cert: ['IDP_TLS_CERT_FILE', raw(env, 'IDP_TLS_CERT_FILE') ?? '/etc/opsbook/tls/cert.pem'],
    key: ['IDP_TLS_KEY_FILE', raw(env, 'IDP_TLS_KEY_FILE') ?? '/etc/opsbook/tls/key.pem'],
  };
  const loaded = {};
  for (const [part, [name, path]] of Object.entries(files)) {
    try {
      loaded[part] = readFileSync(path);
    } catch (err) {
      fail(name, `a readable PEM file (IDP_ISSUER is https; make up makes it in secrets/tls/idp/)`, `${quote(path)} (${err.code})`);
    }
  }
  return loaded;
}

export function loadSettings(env = process.env) {
  const settings = {};
  settings.issuer = issuer(env);
  settings.port = integer(env, 'IDP_PORT', 9000, 1, 65535, 'a TCP port number');
  if (settings.port === HEALTH_PORT) fail('IDP_PORT', `a TCP port number other than ${HEALTH_PORT} (the health check's)`, HEALTH_PORT);

  const clientIdExpected = 'a non-empty client id of A-Z a-z 0-9 - . _ ~';
  settings.clientId = required(env, 'OAUTH_CLIENT_ID', clientIdExpected);
  if (!UNRESERVED.test(settings.clientId)) fail('OAUTH_CLIENT_ID', clientIdExpected, quote(settings.clientId));
  // Restricted to URL-unreserved characters: oauthenticator sends "id:secret" in HTTP Basic
  // without form-encoding it, and oidc-provider form-decodes it ('+' becomes a space, '%' escapes).
  settings.clientSecret = secret(env, 'OAUTH_CLIENT_SECRET', 16, UNRESERVED);
  settings.callbackUrl = callbackUrl(env);

  settings.demoPassword = secret(env, 'DEMO_PASSWORD', 8);
  settings.cookieSecret = secret(env, 'IDP_COOKIE_SECRET', 32);
  settings.accountsFile = raw(env, 'IDP_ACCOUNTS_FILE') ?? '/etc/opsbook-idp/accounts.json';

  const year = 366 * 24 * 3600;
  settings.accessTokenTtl = integer(env, 'IDP_ACCESS_TOKEN_TTL', 600, 1, year, 'a whole number of seconds');
  settings.refreshTokenTtl = integer(env, 'IDP_REFRESH_TOKEN_TTL', 86400, 1, year, 'a whole number of seconds');
  settings.tls = tls(env, settings.issuer);
  return settings;
}
