// The demo accounts, from a JSON file that is read again whenever it changes (its mtime, size or
// inode is checked at each lookup), so that an edited group list takes effect at the account's next
// userinfo call or token refresh. A file that is broken after an edit is logged and ignored: the
// last good copy stays in use. A file that is broken at start stops the start (see load()).
import fs from 'node:fs';

const USERNAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export class AccountsError extends Error {}

function check(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new AccountsError(`not valid JSON (${err.message})`);
  }
  if (!data || typeof data !== 'object' || !Array.isArray(data.accounts)) {
    throw new AccountsError('expected an object with an "accounts" list');
  }
  const accounts = new Map();
  data.accounts.forEach((entry, index) => {
    const where = `accounts[${index}]`;
    if (!entry || typeof entry !== 'object' || Array.isArray(entry)) {
      throw new AccountsError(`${where}: expected an object`);
    }
    const { username, name, email, groups } = entry;
    if (typeof username !== 'string' || !USERNAME.test(username)) {
      throw new AccountsError(`${where}.username: expected lower-case letters, digits, . _ -`);
    }
    if (accounts.has(username)) throw new AccountsError(`${where}.username: '${username}' appears twice`);
    if (typeof name !== 'string' || !name.trim()) throw new AccountsError(`${where}.name: expected a non-empty string`);
    if (typeof email !== 'string' || !/^[^@\s]+@[^@\s]+$/.test(email)) {
      throw new AccountsError(`${where}.email: expected an e-mail address`);
    }
    if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string' && g.trim() === g && g !== '')) {
      throw new AccountsError(`${where}.groups: expected a list of non-empty strings`);
    }
    accounts.set(username, Object.freeze({
      username, name, email, groups: Object.freeze([...new Set(groups)]),
    }));
  });
  return accounts;
}

export class AccountStore {
  constructor(path, log = console) {
    this.path = path;
    this.log = log;
    this.accounts = new Map();
    this.stamp = undefined;
    this.badStamp = undefined;
  }

  static stampOf(stat) {
    return `${stat.ino}:${stat.size}:${stat.mtimeMs}`;
  }

  // First read, at start: any problem throws an AccountsError.
  load() {
    let stat;
    let text;
    try {
      stat = fs.statSync(this.path);
      text = fs.readFileSync(this.path, 'utf8');
    } catch (err) {
      throw new AccountsError(`cannot read ${this.path} (${err.code || err.message})`);
    }
    try {
      this.accounts = check(text);
    } catch (err) {
      throw new AccountsError(`${this.path}: ${err.message}`);
    }
    this.stamp = AccountStore.stampOf(stat);
    return this.accounts.size;
  }

  // Re-read when the file changed; keep the last good copy when the new one is unusable.
  refresh() {
    let stat;
    try {
      stat = fs.statSync(this.path);
    } catch (err) {
      this.log.error(`accounts: cannot stat ${this.path} (${err.code || err.message}); keeping the last good copy`);
      return;
    }
    const stamp = AccountStore.stampOf(stat);
    if (stamp === this.stamp || stamp === this.badStamp) return;
    try {
      const accounts = check(fs.readFileSync(this.path, 'utf8'));
      this.accounts = accounts;
      this.stamp = stamp;
      this.badStamp = undefined;
      this.log.info(`accounts: re-read ${this.path} (${accounts.size} accounts)`);
    } catch (err) {
      // Logged once per broken version; the next change of the file is read again.
      this.badStamp = stamp;
      this.log.error(`accounts: ${this.path} is unusable (${err.message}); keeping the last good copy`);
    }
  }

  get(username) {
    this.refresh();
    return this.accounts.get(username);
  }
}
