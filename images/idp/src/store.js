// oidc-provider's storage adapter: in memory, entries dropped when they expire.
//
// Replaces the package's own memory adapter, a 1000-entry LRU (whose per-entry expiry is not
// applied with quick-lru 6): past about a hundred logins it silently evicts the grants and refresh
// tokens of users who are still signed in. Here nothing is evicted before its TTL; memory stays
// bounded by the TTLs (access and refresh tokens, sessions, grants), swept once a minute.
// Everything is lost at a restart, as is the signing key: users sign in again.

const entries = new Map(); // key -> { value, expiresAt (ms since epoch, or undefined) }
const grantIndex = new Map(); // grantId -> Set of keys of the tokens issued under that grant

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

function read(key) {
  const entry = entries.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    entries.delete(key);
    return undefined;
  }
  return entry.value;
}

function write(key, value, expiresIn) {
  entries.set(key, {
    value,
    expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined,
  });
}

function sweep() {
  const now = Date.now();
  for (const [key, entry] of entries) {
    if (entry.expiresAt !== undefined && entry.expiresAt <= now) entries.delete(key);
  }
  for (const [grantId, keys] of grantIndex) {
    for (const key of keys) if (!entries.has(key)) keys.delete(key);
    if (keys.size === 0) grantIndex.delete(grantId);
  }
}

setInterval(sweep, 60 * 1000).unref();

export default class MemoryStore {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session') write(`sessionUid:${payload.uid}`, id, expiresIn);
    if (payload.userCode) write(`userCode:${payload.userCode}`, id, expiresIn);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      let keys = grantIndex.get(payload.grantId);
      if (!keys) {
        keys = new Set();
        grantIndex.set(payload.grantId, keys);
      }
      keys.add(key);
    }
    write(key, payload, expiresIn);
  }

  async find(id) {
    return read(this.key(id));
  }

  async findByUid(uid) {
    const id = read(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = read(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const value = read(this.key(id));
    if (value) value.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    entries.delete(this.key(id));
  }

  // eslint-disable-next-line class-methods-use-this
  async revokeByGrantId(grantId) {
    const keys = grantIndex.get(grantId);
    if (!keys) return;
    for (const key of keys) entries.delete(key);
    grantIndex.delete(grantId);
  }
}
