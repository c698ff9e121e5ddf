// Shared-browser mode: a browser context keeps its storage in memory only, so a session's login
// is exported from the live page (this origin's IndexedDB databases and localStorage) and
// restored into a fresh context before the app loads (import_storage.js). Values are encoded so
// that JSON carries them: binary data, dates, maps and sets are tagged; a CryptoKey is tagged with
// its key material, which key_shadow.js recorded when the page made it (a non-extractable key),
// or read with exportKey (an extractable one); anything that cannot be exported (a Blob, a
// CryptoKey without a shadow) fails the export rather than being lost silently. Error messages
// name where a value was, never what it holds.
async function () {
    const SHADOW_DB = 'wa-outbox-shadow';
    const SHADOW_STORE = 'keys';
    const req = (r) => new Promise((resolve, reject) => {
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
    });
    // The shadows key_shadow.js wrote: [[database, store, primary key], {entries}].
    const shadows = await new Promise((resolve, reject) => {
        const r = indexedDB.open(SHADOW_DB, 1);
        r.onupgradeneeded = () => r.result.createObjectStore(SHADOW_STORE);
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
    }).then(async (db) => {
        try {
            const st = db.transaction(SHADOW_STORE, 'readonly').objectStore(SHADOW_STORE);
            const [keys, values] = await Promise.all([req(st.getAllKeys()), req(st.getAll())]);
            return keys.map((k, i) => [k, values[i]]);
        } finally {
            db.close();
        }
    });
    const samePath = (a, b) => a.length === b.length && a.every((x, i) => String(x) === String(b[i]));
    // Exported keys are read with exportKey after the walk (it is asynchronous).
    const pending = [];
    let where = null;
    const cryptoKey = (v, path) => {
        const here = where.db + '/' + where.store;
        const o = { $t: 'cryptokey', algorithm: null, usages: v.usages.slice(), extractable: v.extractable };
        if (v.extractable) {
            o.algorithm = { name: v.algorithm.name };
            for (const m of ['namedCurve', 'length']) if (typeof v.algorithm[m] === 'number' || typeof v.algorithm[m] === 'string') o.algorithm[m] = v.algorithm[m];
            if (v.algorithm.hash) o.algorithm.hash = v.algorithm.hash.name;
            o.format = 'jwk';
            pending.push(crypto.subtle.exportKey('jwk', v).then((jwk) => { o.jwk = jwk; }));
            return o;
        }
        const pk = where.key;
        const shadow = shadows.find(([k]) => indexedDB.cmp(k, [where.db, where.store, pk]) === 0);
        const entry = shadow && shadow[1] && Array.isArray(shadow[1].entries)
            ? shadow[1].entries.find((e) => Array.isArray(e.path) && samePath(e.path, path))
            : null;
        if (!entry) {
            throw new Error('cannot export a non-extractable CryptoKey stored in ' + here +
                ': no copy of its key material was recorded when the page made it (a key from ' +
                'deriveKey, unwrapKey or a worker, or stored deeper than one level, is not shadowed)');
        }
        const m = entry.material;
        const same = m.algorithm && m.algorithm.name === v.algorithm.name &&
            m.usages.length === v.usages.length && v.usages.every((u) => m.usages.includes(u));
        if (!same) throw new Error('the recorded key material of a CryptoKey in ' + here + ' does not match the stored key');
        o.algorithm = m.algorithm;
        o.usages = m.usages;
        o.format = m.format;
        if (m.format === 'jwk') o.jwk = m.jwk; else o.data = m.data;
        return o;
    };
    const enc = (v, path) => {
        if (v === null || typeof v === 'boolean' || typeof v === 'string') return v;
        if (typeof v === 'number') return Number.isFinite(v) ? v : { $t: 'num', v: String(v) };
        if (v === undefined) return { $t: 'undef' };
        if (typeof v === 'bigint') return { $t: 'bigint', v: v.toString() };
        const b64 = (u8) => {
            let s = '';
            for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
            return btoa(s);
        };
        if (v instanceof ArrayBuffer) return { $t: 'ab', b: b64(new Uint8Array(v)) };
        if (ArrayBuffer.isView(v)) {
            return { $t: 'view', k: v.constructor.name, b: b64(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
        }
        if (v instanceof Date) return { $t: 'date', v: v.getTime() };
        if (typeof CryptoKey !== 'undefined' && v instanceof CryptoKey) return cryptoKey(v, path);
        if (Array.isArray(v)) return v.map((x, i) => enc(x, path.concat(i)));
        if (v instanceof Map) return { $t: 'map', v: Array.from(v, ([k, x]) => [enc(k, path.concat('<map>')), enc(x, path.concat('<map>'))]) };
        if (v instanceof Set) return { $t: 'set', v: Array.from(v, (x) => enc(x, path.concat('<set>'))) };
        const proto = Object.getPrototypeOf(v);
        if (typeof v === 'object' && (proto === Object.prototype || proto === null)) {
            const o = {};
            for (const k of Object.keys(v)) o[k] = enc(v[k], path.concat(k));
            return '$t' in o ? { $t: 'obj', v: o } : o;
        }
        throw new Error('cannot export a stored ' + ((proto && proto.constructor && proto.constructor.name) || typeof v));
    };
    const databases = [];
    for (const info of await indexedDB.databases()) {
        // Our own shadows travel inside the tagged keys, not as a database of the app.
        if (info.name === SHADOW_DB) continue;
        const db = await new Promise((resolve, reject) => {
            const r = indexedDB.open(info.name);
            r.onsuccess = () => resolve(r.result);
            r.onerror = () => reject(r.error);
            r.onblocked = () => reject(new Error('IndexedDB ' + info.name + ' blocked'));
        });
        try {
            const stores = [];
            const names = Array.from(db.objectStoreNames);
            if (names.length) {
                const tx = db.transaction(names, 'readonly');
                for (const name of names) {
                    const st = tx.objectStore(name);
                    const indexes = Array.from(st.indexNames, (n) => {
                        const ix = st.index(n);
                        return { name: n, keyPath: ix.keyPath, unique: ix.unique, multiEntry: ix.multiEntry };
                    });
                    const [keys, values] = await Promise.all([req(st.getAllKeys()), req(st.getAll())]);
                    stores.push({
                        name,
                        keyPath: st.keyPath,
                        autoIncrement: st.autoIncrement,
                        indexes,
                        records: values.map((v, i) => {
                            where = { db: db.name, store: name, key: keys[i] };
                            return [enc(keys[i], []), enc(v, [])];
                        }),
                    });
                }
            }
            databases.push({ name: db.name, version: db.version, stores });
        } finally {
            db.close();
        }
    }
    const local = {};
    for (let i = 0; i < localStorage.length; i++) {
        const k = localStorage.key(i);
        local[k] = localStorage.getItem(k);
    }
    await Promise.all(pending);
    return { format: 1, origin: location.origin, databases, localStorage: local };
}
