// Is WhatsApp Web still there? Waits up to `graceMs` for it (a reload in progress is not a death).
function (graceMs) {
    const here = () => !!(window.Debug && window.Debug.VERSION != undefined && typeof window.require === 'function');
    if (here()) return true;
    return new Promise((resolve) => {
        const started = Date.now();
        const check = () => {
            if (here()) resolve(true);
            else if (Date.now() - started > graceMs) resolve(false);
            else setTimeout(check, 25);
        };
        check();
    });
}
