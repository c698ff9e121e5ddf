// A piece of media that media_download.js left in the page under `token`: `length` bytes from
// `offset`, as base64; the bytes are forgotten once the last piece is read, or at once with
// length 0. Throws when the token is unknown (expired or the page reloaded).
function (lib, token, offset, length) {
    const store = window[Symbol.for('wa-outbox.media')];
    const bytes = store && store.get(token);
    if (!bytes) {
        if (length === 0) return '';
        throw new Error('the downloaded media is no longer in the page');
    }
    if (length === 0) {
        store.delete(token);
        return '';
    }
    const part = bytes.subarray(offset, Math.min(bytes.byteLength, offset + length));
    if (offset + length >= bytes.byteLength) store.delete(token);
    let s = '';
    for (let i = 0; i < part.length; i += 0x8000) s += String.fromCharCode.apply(null, part.subarray(i, i + 0x8000));
    return btoa(s);
}
