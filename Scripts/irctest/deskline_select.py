"""pytest plugin (`-p deskline_select`): deselects the tests named in the file
$DESKLINE_IRCTEST_DESELECT, one node id a line, by exact id (pytest's --deselect matches
prefixes, so `--deselect ...::testPlain` would also drop testPlainFailure)."""
import os


def pytest_collection_modifyitems(session, config, items):
    path = os.environ.get("DESKLINE_IRCTEST_DESELECT")
    if not path:
        return
    with open(path) as f:
        wanted = {line.strip() for line in f if line.strip()}
    keep, drop = [], []
    for item in items:
        (drop if item.nodeid in wanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
