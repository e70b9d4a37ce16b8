// Docker HEALTHCHECK: exit 0 when GET /healthz on the local port answers 200, over https when the
// issuer is https. The certificate is not checked here: this asks whether the process answers on
// 127.0.0.1, and trust is the browser's and the hub's business (they check it).
import http from 'node:http';
import https from 'node:https';

const port = Number(process.env.IDP_PORT || 9000);
const secure = (process.env.IDP_ISSUER || '').startsWith('https:');
const options = { host: '127.0.0.1', port, path: '/healthz', timeout: 2000, rejectUnauthorized: false };
const request = (secure ? https : http).get(options, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
request.on('timeout', () => request.destroy(new Error('timeout')));
request.on('error', () => process.exit(1));
