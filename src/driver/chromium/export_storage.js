// Shared-browser mode: a browser context keeps its storage in memory only, so a session's login
// is exported from the live page (this origin's IndexedDB databases and localStorage) and
// restored into a fresh context before the app loads (import_storage.js). Values are encoded so
// that JSON carries them: binary data, dates, maps and sets are tagged; anything that cannot be
// exported (a Blob, a CryptoKey) fails the export rather than being lost silently.
async function () {
    const enc = (v) => {
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
        if (Array.isArray(v)) return v.map(enc);
        if (v instanceof Map) return { $t: 'map', v: Array.from(v, ([k, x]) => [enc(k), enc(x)]) };
        if (v instanceof Set) return { $t: 'set', v: Array.from(v, enc) };
        const proto = Object.getPrototypeOf(v);
        if (typeof v === 'object' && (proto === Object.prototype || proto === null)) {
            const o = {};
            for (const k of Object.keys(v)) o[k] = enc(v[k]);
            return '$t' in o ? { $t: 'obj', v: o } : o;
        }
        throw new Error('cannot export a stored ' + ((proto && proto.constructor && proto.constructor.name) || typeof v));
    };
    const req = (r) => new Promise((resolve, reject) => {
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
    });
    const databases = [];
    for (const info of await indexedDB.databases()) {
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
                        records: values.map((v, i) => [enc(keys[i]), enc(v)]),
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
    return { format: 1, origin: location.origin, databases, localStorage: local };
}
