// Shared-browser mode: writes an export of export_storage.js into this (fresh, empty) browser
// context, on a placeholder document of the app's origin, before the app itself loads.
async function (data) {
    if (!data || data.format !== 1) throw new Error('unknown storage export format');
    if (data.origin !== location.origin) throw new Error('the export belongs to ' + data.origin);
    const unb64 = (s) => {
        const bin = atob(s);
        const u8 = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
        return u8;
    };
    const dec = (v) => {
        if (v === null || typeof v !== 'object') return v;
        if (Array.isArray(v)) return v.map(dec);
        switch (v.$t) {
            case undefined: {
                const o = {};
                for (const k of Object.keys(v)) o[k] = dec(v[k]);
                return o;
            }
            case 'obj': {
                const o = {};
                for (const k of Object.keys(v.v)) o[k] = dec(v.v[k]);
                return o;
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
            case 'map': return new Map(v.v.map(([k, x]) => [dec(k), dec(x)]));
            case 'set': return new Set(v.v.map(dec));
            default: throw new Error('unknown tag ' + v.$t);
        }
    };
    for (const d of data.databases) {
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
                for (const s of d.stores) {
                    const st = tx.objectStore(s.name);
                    for (const [k, v] of s.records) {
                        if (s.keyPath === null) st.put(dec(v), dec(k));
                        else st.put(dec(v));
                    }
                }
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
    localStorage.clear();
    for (const k of Object.keys(data.localStorage || {})) localStorage.setItem(k, data.localStorage[k]);
    return data.databases.length;
}
