// Client.logout.
async function () {
    await window.require('WAWebSocketModel').Socket.logout();
    return true;
}
