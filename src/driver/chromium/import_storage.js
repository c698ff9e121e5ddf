// Shared-browser mode: writes an export of export_storage.js into this (fresh, empty) browser
// context, on a placeholder document of the app's origin, before the app itself loads. A tagged
// CryptoKey is imported again with its own extractability and usages, and (when not extractable)
// its shadow is written back for the next export (key_shadow.js).
async function (data) {
    const SHADOW_DB = 'wa-outbox-shadow';
    const SHADOW_STORE = 'keys';
    if (!data || data.format !== 1) throw new Error('unknown storage export format');
    if (data.origin !== location.origin) throw new Error('the export belongs to ' + data.origin);
    const unb64 = (s) => {
        const bin = atob(s);
        const u8 = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
        return u8;
    };
    // Decoding is asynchronous (importKey), so every record is decoded before its transaction
    // opens: an IndexedDB transaction commits as soon as nothing is pending in it.
    const dec = async (v, path, keys) => {
        if (v === null || typeof v !== 'object') return v;
        if (Array.isArray(v)) return Promise.all(v.map((x, i) => dec(x, path.concat(i), keys)));
        const fields = async (src) => {
            const o = {};
            for (const k of Object.keys(src)) o[k] = await dec(src[k], path.concat(k), keys);
            return o;
        };
        switch (v.$t) {
            case undefined: return fields(v);
            case 'obj': return fields(v.v);
            case 'cryptokey': {
                const material = v.format === 'jwk'
                    ? { format: 'jwk', jwk: v.jwk, algorithm: v.algorithm, usages: v.usages }
                    : { format: v.format, data: v.data, algorithm: v.algorithm, usages: v.usages };
                const key = await crypto.subtle.importKey(
                    v.format, v.format === 'jwk' ? v.jwk : unb64(v.data), v.algorithm, !!v.extractable, v.usages);
                if (!v.extractable) keys.push({ path, material });
                return key;
            }
            case 'num': return Number(v.v);
            case 'undef': return undefined;
            case 'bigint': return BigInt(v.v);
            case 'ab': return unb64(v.b).buffer;
            case 'view': {
                const u8 = unb64(v.b);
                if (v.k === 'DataView') return new DataView(u8.buffer);
                const Ctor = globalThis[v.k];
                if (typeof Ctor !== 'function' || !Ctor.BYTES_PER_ELEMENT) throw new Error('unknown typed array ' + v.k);
                return new Ctor(u8.buffer, 0, u8.byteLength / Ctor.BYTES_PER_ELEMENT);
            }
            case 'date': return new Date(v.v);
            case 'map': return new Map(await Promise.all(v.v.map(async ([k, x]) => [await dec(k, path.concat('<map>'), keys), await dec(x, path.concat('<map>'), keys)])));
            case 'set': return new Set(await Promise.all(v.v.map((x) => dec(x, path.concat('<set>'), keys))));
            default: throw new Error('unknown tag ' + v.$t);
        }
    };
    const shadows = [];
    for (const d of data.databases) {
        const decoded = [];
        for (const s of d.stores) {
            const records = [];
            for (const [k, v] of s.records) {
                const keys = [];
                const key = await dec(k, [], []);
                records.push([key, await dec(v, [], keys)]);
                if (keys.length) shadows.push([[d.name, s.name, key], { v: 1, entries: keys }]);
            }
            decoded.push(records);
        }
        await new Promise((resolve, reject) => {
            const r = indexedDB.deleteDatabase(d.name);
            r.onsuccess = () => resolve();
            r.onerror = () => reject(r.error);
        });
        const db = await new Promise((resolve, reject) => {
            const r = indexedDB.open(d.name, d.version);
            r.onupgradeneeded = () => {
                for (const s of d.stores) {
                    const st = r.result.createObjectStore(s.name, { keyPath: s.keyPath, autoIncrement: s.autoIncrement });
                    for (const ix of s.indexes) st.createIndex(ix.name, ix.keyPath, { unique: ix.unique, multiEntry: ix.multiEntry });
                }
            };
            r.onsuccess = () => resolve(r.result);
            r.onerror = () => reject(r.error);
            r.onblocked = () => reject(new Error('IndexedDB ' + d.name + ' blocked'));
        });
        try {
            if (d.stores.length) {
                const tx = db.transaction(d.stores.map((s) => s.name), 'readwrite', { durability: 'strict' });
                d.stores.forEach((s, i) => {
                    const st = tx.objectStore(s.name);
                    for (const [k, v] of decoded[i]) {
                        if (s.keyPath === null) st.put(v, k);
                        else st.put(v);
                    }
                });
                await new Promise((resolve, reject) => {
                    tx.oncomplete = () => resolve();
                    tx.onerror = () => reject(tx.error);
                    tx.onabort = () => reject(tx.error || new Error('aborted'));
                });
            }
        } finally {
            db.close();
        }
    }
    if (shadows.length) {
        const db = await new Promise((resolve, reject) => {
            const r = indexedDB.open(SHADOW_DB, 1);
            r.onupgradeneeded = () => r.result.createObjectStore(SHADOW_STORE);
            r.onsuccess = () => resolve(r.result);
            r.onerror = () => reject(r.error);
        });
        try {
            const tx = db.transaction(SHADOW_STORE, 'readwrite');
            for (const [k, v] of shadows) tx.objectStore(SHADOW_STORE).put(v, k);
            await new Promise((resolve, reject) => {
                tx.oncomplete = () => resolve();
                tx.onerror = () => reject(tx.error);
                tx.onabort = () => reject(tx.error || new Error('aborted'));
            });
        } finally {
            db.close();
        }
    }
    localStorage.clear();
    for (const k of Object.keys(data.localStorage || {})) localStorage.setItem(k, data.localStorage[k]);
    return data.databases.length;
}
