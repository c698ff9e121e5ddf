function () {
    return true;
}
