// Resolves with window.Debug.VERSION once WhatsApp Web's code is loaded (the same signal
// whatsapp-web.js waits for). The wait happens inside the page: one CDP call, no round-trip polling.
function (timeoutMs) {
    return new Promise((resolve, reject) => {
        const started = Date.now();
        const check = () => {
            if (window.Debug && window.Debug.VERSION != undefined && typeof window.require === 'function') {
                resolve(String(window.Debug.VERSION));
            } else if (Date.now() - started > timeoutMs) {
                reject(new Error('WhatsApp Web did not load (no window.Debug.VERSION)'));
            } else {
                setTimeout(check, 25);
            }
        };
        check();
    });
}
