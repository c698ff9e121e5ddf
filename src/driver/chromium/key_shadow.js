// Shared-browser mode only, installed with Page.addScriptToEvaluateOnNewDocument so that it runs
// before any script of the app. A browser context keeps storage in memory, so a session's login
// is exported from the live page as JSON (export_storage.js); WhatsApp Web keeps a
// non-extractable CryptoKey in it (IndexedDB `wawc_db_enc`/`keys`, `{key, _expiration}`), whose
// key material no script can read back. So this records it on the way in:
// - crypto.subtle.importKey / generateKey with extractable = false: the key material (copied
//   before the call; the caller may wipe its buffer) is kept in a WeakMap keyed by the CryptoKey;
// - IDBObjectStore.put / add and IDBCursor.update: a stored value that is such a key, or holds
//   one at its first level (`{key: CryptoKey}`), gets a shadow record in our own database
//   SHADOW_DB (key [database, store, primary key], value {v: 1, entries: [{path, material}]})
//   once the app's request succeeded; a stored key we know nothing of removes the shadow, so an
//   export fails loudly instead of carrying a stale one.
// export_storage.js tags such a key with its shadow's material; import_storage.js imports it
// again (non-extractable) and writes the shadow back. The material never leaves the browser's
// own storage except inside the login export, which is handled like the login itself.
// Anything this does not understand passes through untouched, and a failure of ours never
// reaches the app. SHADOW_DB is left out of indexedDB.databases().
() => {
    const SHADOW_DB = 'wa-outbox-shadow';
    const SHADOW_STORE = 'keys';
    if (typeof SubtleCrypto === 'undefined' || typeof IDBObjectStore === 'undefined') return;

    const MATERIAL = new WeakMap();
    const origImport = SubtleCrypto.prototype.importKey;
    const origGenerate = SubtleCrypto.prototype.generateKey;
    const origExport = SubtleCrypto.prototype.exportKey;
    const origPut = IDBObjectStore.prototype.put;
    const origAdd = IDBObjectStore.prototype.add;
    const origDelete = IDBObjectStore.prototype.delete;
    const origUpdate = IDBCursor.prototype.update;
    const origOpen = IDBFactory.prototype.open;
    const origDatabases = IDBFactory.prototype.databases;

    const b64 = (u8) => {
        let s = '';
        for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
        return btoa(s);
    };
    const bytesOf = (d) => {
        if (d instanceof ArrayBuffer) return new Uint8Array(d.slice(0));
        if (ArrayBuffer.isView(d)) return new Uint8Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
        return null;
    };
    // What importKey needs again: the algorithm's plain members (name, hash, namedCurve, length).
    const plainAlgorithm = (a) => {
        if (typeof a === 'string') return { name: a };
        if (!a || typeof a !== 'object' || typeof a.name !== 'string') return null;
        const o = { name: a.name };
        if (typeof a.hash === 'string') o.hash = a.hash;
        else if (a.hash && typeof a.hash.name === 'string') o.hash = a.hash.name;
        if (typeof a.namedCurve === 'string') o.namedCurve = a.namedCurve;
        if (typeof a.length === 'number') o.length = a.length;
        return o;
    };
    // Our wrappers look like the originals: same name, length and property attributes.
    const replace = (proto, name, impl) => {
        const d = Object.getOwnPropertyDescriptor(proto, name);
        if (!d || typeof d.value !== 'function') return;
        Object.defineProperty(impl, 'name', { value: d.value.name, configurable: true });
        Object.defineProperty(impl, 'length', { value: d.value.length, configurable: true });
        Object.defineProperty(proto, name, { ...d, value: impl });
    };

    replace(SubtleCrypto.prototype, 'importKey', {
        importKey(format, keyData, algorithm, extractable, usages) {
            const p = Reflect.apply(origImport, this, arguments);
            if (extractable) return p;
            let material = null;
            try {
                const alg = plainAlgorithm(algorithm);
                if (alg && Array.isArray(usages)) {
                    if (format === 'jwk' && keyData && typeof keyData === 'object') {
                        material = { format, jwk: JSON.parse(JSON.stringify(keyData)), algorithm: alg, usages: usages.slice() };
                    } else {
                        const u8 = bytesOf(keyData);
                        if (u8) material = { format: String(format), data: b64(u8), algorithm: alg, usages: usages.slice() };
                    }
                }
            } catch (e) { material = null; }
            if (!material) return p;
            return p.then((key) => {
                if (key instanceof CryptoKey) MATERIAL.set(key, material);
                return key;
            });
        },
    }.importKey);

    // A non-extractable key is generated extractable, its material read, and imported again as
    // asked; anything unusual gets the original call.
    replace(SubtleCrypto.prototype, 'generateKey', {
        generateKey(algorithm, extractable, usages) {
            if (extractable || arguments.length < 3) return Reflect.apply(origGenerate, this, arguments);
            const subtle = this;
            const args = Array.from(arguments);
            const again = (key) => Reflect.apply(origExport, subtle, ['jwk', key]).then((jwk) => {
                const alg = plainAlgorithm(key.algorithm);
                const usages = key.usages.slice();
                return Reflect.apply(origImport, subtle, ['jwk', jwk, alg, false, usages]).then((k) => {
                    MATERIAL.set(k, { format: 'jwk', jwk, algorithm: alg, usages });
                    return k;
                });
            });
            return Reflect.apply(origGenerate, subtle, [algorithm, true, usages])
                .then((r) => {
                    if (r instanceof CryptoKey) return again(r);
                    // A pair: the public key is extractable anyway.
                    return again(r.privateKey).then((privateKey) => ({ publicKey: r.publicKey, privateKey }));
                })
                .catch(() => Reflect.apply(origGenerate, subtle, args));
        },
    }.generateKey);

    let shadowDb = null;
    const openShadow = () => {
        if (!shadowDb) {
            shadowDb = new Promise((resolve, reject) => {
                const r = Reflect.apply(origOpen, indexedDB, [SHADOW_DB, 1]);
                r.onupgradeneeded = () => r.result.createObjectStore(SHADOW_STORE);
                r.onsuccess = () => resolve(r.result);
                r.onerror = () => reject(r.error);
            });
            shadowDb.catch(() => { shadowDb = null; });
        }
        return shadowDb;
    };
    const writeShadow = (key, entries) => openShadow().then((db) => {
        const st = db.transaction(SHADOW_STORE, 'readwrite').objectStore(SHADOW_STORE);
        if (entries) Reflect.apply(origPut, st, [{ v: 1, entries }, key]);
        else Reflect.apply(origDelete, st, [key]);
    }).catch(() => {});

    // The CryptoKeys a value holds: itself, or its own members (one level down).
    const keysIn = (value) => {
        if (value instanceof CryptoKey) return [{ path: [], key: value }];
        if (!value || typeof value !== 'object' || ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return [];
        const proto = Object.getPrototypeOf(value);
        if (proto !== Object.prototype && proto !== null && !Array.isArray(value)) return [];
        const out = [];
        for (const k of Object.keys(value)) {
            const v = value[k];
            if (v instanceof CryptoKey) out.push({ path: [Array.isArray(value) ? Number(k) : k], key: v });
        }
        return out;
    };
    // After the app's write succeeded: the shadow of what it stored (or none, if it stored a
    // key we know nothing of). `primaryKey` reads the record's key then.
    const follow = (store, value, req, primaryKey) => {
        try {
            const found = keysIn(value);
            if (!found.length || store.transaction.db.name === SHADOW_DB) return;
            const where = [store.transaction.db.name, store.name];
            let entries = [];
            for (const f of found) {
                if (f.key.extractable) continue;
                const material = MATERIAL.get(f.key);
                if (!material) { entries = null; break; }
                entries.push({ path: f.path, material });
            }
            if (entries && !entries.length) return;
            req.addEventListener('success', () => {
                try { writeShadow([...where, primaryKey()], entries); } catch (e) { /* not ours to fail */ }
            });
        } catch (e) { /* not ours to fail */ }
    };

    for (const name of ['put', 'add']) {
        const orig = name === 'put' ? origPut : origAdd;
        replace(IDBObjectStore.prototype, name, {
            [name](value, key) {
                const req = Reflect.apply(orig, this, arguments);
                follow(this, value, req, () => req.result);
                return req;
            },
        }[name]);
    }
    replace(IDBCursor.prototype, 'update', {
        update(value) {
            const req = Reflect.apply(origUpdate, this, arguments);
            try {
                const store = this.source instanceof IDBIndex ? this.source.objectStore : this.source;
                const pk = this.primaryKey;
                follow(store, value, req, () => pk);
            } catch (e) { /* not ours to fail */ }
            return req;
        },
    }.update);

    if (typeof origDatabases === 'function') {
        replace(IDBFactory.prototype, 'databases', {
            databases() {
                return Reflect.apply(origDatabases, this, arguments)
                    .then((list) => (Array.isArray(list) ? list.filter((d) => !d || d.name !== SHADOW_DB) : list));
            },
        }.databases);
    }
}
