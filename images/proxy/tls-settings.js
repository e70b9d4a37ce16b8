// The proxy's TLS settings, checked before configurable-http-proxy starts (and by
// scripts/init-secrets.sh on the team's own files, before `make up` copies them). Prints the
// proxy's extra arguments on stdout, one per line; on a bad setting, one line per problem on
// stderr (the setting's name, what it expected, what it got) and exit 1. Never prints a key.
//
//   TLS_MODE            self-signed | files | off (empty: off, as before TLS came)
//   OAUTH_CALLBACK_URL  the public URL: https unless off; its host must be in the certificate,
//                       and plain http is redirected to its port
//   OPSBOOK_TLS_CERT    the certificate (PEM, the server's first, then its chain) [/etc/opsbook/tls/cert.pem]
//   OPSBOOK_TLS_KEY     its private key (PEM, no passphrase)                  [/etc/opsbook/tls/key.pem]
//   OPSBOOK_TLS_REDIRECT_PORT  where plain http is answered with a redirect     [8080]
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');

const MODES = ['self-signed', 'files', 'off'];
// The settings a user sets, named in messages: where the files came from.
const CERT_SETTING = { 'self-signed': 'the generated certificate (secrets/tls/, make up)', files: 'TLS_CERT_FILE' };
const KEY_SETTING = { 'self-signed': 'the generated key (secrets/tls/, make up)', files: 'TLS_KEY_FILE' };

function read(path, setting, what, problems) {
  try {
    return fs.readFileSync(path);
  } catch (err) {
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EACCES' ? 'not readable' : err.code;
    problems.push(`${setting}: expected ${what}, got '${path}' (${why})`);
    return undefined;
  }
}

// The first certificate of a PEM bundle: the server's own.
function leaf(pem) {
  const match = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(pem.toString());
  return match ? new crypto.X509Certificate(match[0]) : undefined;
}

function covers(certificate, host) {
  const bare = host.replace(/^\[|\]$/g, '');
  return net.isIP(bare) ? certificate.checkIP(bare) !== undefined : certificate.checkHost(bare) !== undefined;
}

function checkFiles(env, mode, publicUrl, problems) {
  const certPath = env.OPSBOOK_TLS_CERT || '/etc/opsbook/tls/cert.pem';
  const keyPath = env.OPSBOOK_TLS_KEY || '/etc/opsbook/tls/key.pem';
  const certSetting = CERT_SETTING[mode];
  const keySetting = KEY_SETTING[mode];
  const certPem = read(certPath, certSetting, 'a readable PEM certificate', problems);
  const keyPem = read(keyPath, keySetting, 'a readable PEM private key without a passphrase', problems);
  let certificate;
  let key;
  if (certPem) {
    try {
      certificate = leaf(certPem);
    } catch { /* reported below */ }
    if (!certificate) problems.push(`${certSetting}: expected a PEM certificate, got '${certPath}' (no certificate in it)`);
  }
  if (keyPem) {
    try {
      key = crypto.createPrivateKey(keyPem);
    } catch (err) {
      problems.push(`${keySetting}: expected a PEM private key without a passphrase, got '${keyPath}' (${err.code || 'unreadable'})`);
    }
  }
  if (certificate && key && !certificate.checkPrivateKey(key)) {
    problems.push(`${keySetting}: expected the private key of ${certSetting}'s certificate, got '${keyPath}' (another key)`);
  }
  if (certificate && publicUrl && !covers(certificate, publicUrl.hostname)) {
    problems.push(`${certSetting}: expected a certificate for ${publicUrl.hostname} (OAUTH_CALLBACK_URL's host), `
      + `got '${certPath}' for ${certificate.subjectAltName || certificate.subject}`);
  }
  if (certificate && new Date(certificate.validTo) <= new Date()) {
    problems.push(`${certSetting}: expected a certificate still valid, got '${certPath}' (expired ${certificate.validTo})`);
  }
}

function check(env) {
  const problems = [];
  const mode = env.TLS_MODE || 'off';
  if (!MODES.includes(mode)) {
    problems.push(`TLS_MODE: expected one of ${MODES.join(', ')}, got '${mode}'`);
    return { problems, args: [] };
  }
  if (mode === 'off') return { problems, args: [] };
  let publicUrl;
  try {
    publicUrl = new URL(env.OAUTH_CALLBACK_URL || '');
  } catch { /* reported below */ }
  if (!publicUrl || publicUrl.protocol !== 'https:') {
    problems.push(`OAUTH_CALLBACK_URL: expected an https URL (TLS_MODE is ${mode}), got '${env.OAUTH_CALLBACK_URL || ''}'`);
    publicUrl = undefined;
  }
  checkFiles(env, mode, publicUrl, problems);
  const certPath = env.OPSBOOK_TLS_CERT || '/etc/opsbook/tls/cert.pem';
  const keyPath = env.OPSBOOK_TLS_KEY || '/etc/opsbook/tls/key.pem';
  const args = publicUrl ? [
    `--ssl-cert=${certPath}`,
    `--ssl-key=${keyPath}`,
    `--redirect-port=${env.OPSBOOK_TLS_REDIRECT_PORT || 8080}`,
    `--redirect-to=${publicUrl.port || 443}`,
  ] : [];
  return { problems, args };
}

const { problems, args } = check(process.env);
if (problems.length) {
  for (const problem of problems) process.stderr.write(`opsbook proxy: ${problem}\n`);
  process.exit(1);
}
process.stdout.write(args.map((arg) => `${arg}\n`).join(''));
