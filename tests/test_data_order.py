"""The batch loader's data orders (BatchLoader, sampling=random|epoch|aligned): every window is a real stretch
of the data with the one shift, an epoch sees every window once, aligned windows start at documents, and a loader
restored from its state_dict continues bit for bit."""

import numpy as np
import pytest

from dataloader import BatchLoader

T = 16
EOT = 65535
META = {"dtype": "uint16", "vocab_size": 65536, "eot_token": EOT}


def positions_file(tmp_path, n=5000):
    """Token i is i: a window's first token says where it starts."""
    path = str(tmp_path / "train.bin")
    np.arange(n, dtype=np.uint16).tofile(path)
    return path, np.arange(n)


def documents_file(tmp_path, seed=0, longest=60):
    """Documents of 3..longest tokens ending in end-of-text; every other token is its own position, so a stretch
    of the data is a run of consecutive numbers."""
    rng = np.random.default_rng(seed)
    data, starts = [], []
    while len(data) < 6000:
        starts.append(len(data))
        length = int(rng.integers(3, longest))
        data += list(range(len(data), len(data) + length - 1)) + [EOT]
    path = str(tmp_path / "docs.bin")
    np.array(data, dtype=np.uint16).tofile(path)
    return path, np.array(data), starts


def draw(loader, batches):
    return [loader.next_batch() for _ in range(batches)]


@pytest.mark.parametrize("sampling", ["random", "epoch"])
def test_every_window_is_a_stretch_of_the_data_with_the_shift(tmp_path, sampling):
    path, data = positions_file(tmp_path)
    loader = BatchLoader(path, META, 8, T, seed=1, sampling=sampling)
    for x, y in draw(loader, 50):
        for row_x, row_y in zip(x.numpy(), y.numpy()):
            s = row_x[0]
            assert (row_x == data[s : s + T]).all() and (row_y == data[s + 1 : s + T + 1]).all()


def test_an_epoch_covers_every_window_of_its_grid_once_then_reshuffles(tmp_path):
    path, data = positions_file(tmp_path)
    loader = BatchLoader(path, META, 1, T, seed=3, sampling="epoch")
    starts = {0: [], 1: [], 2: []}
    while True:
        start = int(loader.next_batch()[0][0, 0])
        if loader.epoch == 3:
            break
        starts[loader.epoch].append(start)  # the epoch this window came from
    for epoch in (0, 1):
        offset = min(starts[epoch])
        assert offset < T
        count = len(starts[epoch])
        assert sorted(starts[epoch]) == list(range(offset, offset + count * T, T))  # each window of the grid once
        assert offset + (count + 1) * T + 1 > len(data)  # and no room for another: the grid covers the file
    assert starts[0] != starts[1][: len(starts[0])]  # a new order (and offset) each epoch
    assert loader.epochs() == pytest.approx(3.0, abs=0.01)


def test_processes_share_an_epoch_without_overlap(tmp_path):
    path, _ = positions_file(tmp_path)
    shares = []
    for rank in range(3):
        loader = BatchLoader(path, META, 1, T, seed=3, sampling="epoch", rank=rank, world_size=3)
        loader.start_epoch()
        shares.append(set(loader.order.tolist()))
    single = BatchLoader(path, META, 1, T, seed=3, sampling="epoch")
    single.start_epoch()
    assert not (shares[0] & shares[1]) and not (shares[1] & shares[2]) and not (shares[0] & shares[2])
    assert shares[0] | shares[1] | shares[2] == set(single.order.tolist())


def test_aligned_windows_start_at_documents_and_pack_whole_ones(tmp_path):
    path, data, starts = documents_file(tmp_path, longest=20)  # and a few longer than a window (T + 1 = 17)
    doc_of = {}  # every position a packed piece may start at: a document start, or a window-length piece of it
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        doc_of.update({p: s for p in range(s, end, T + 1)})
    loader = BatchLoader(path, META, 4, T, seed=5, sampling="aligned")
    assert loader.doc_starts.tolist() == starts
    seen, pieces, rows = set(), 0, 0
    for x, y in draw(loader, 200):
        for row in np.concatenate([x.numpy(), y.numpy()[:, -1:]], axis=1):  # the T + 1 tokens of each window
            assert row[0] in doc_of  # the window starts at a document (or a piece of a long one)
            for a, b in zip(row[:-1], row[1:]):
                if a == EOT:
                    assert b in doc_of or b == EOT  # the next document (or a long one's last piece: its end-of-text)
                    pieces += 1
                else:
                    assert b == a + 1 or b == EOT  # inside a document, its own tokens in order
            seen.add(doc_of[row[0]])
            rows += 1
            pieces += 1
    assert pieces > 1.2 * rows  # documents are packed together, not one per window
    assert len(seen) > len(starts) // 2


@pytest.mark.parametrize("sampling", ["random", "epoch", "aligned"])
def test_a_loader_restored_from_its_state_continues_bit_for_bit(tmp_path, sampling):
    path, _, _ = documents_file(tmp_path)
    a = BatchLoader(path, META, 4, T, seed=7, sampling=sampling)
    draw(a, 37)  # mid-epoch, with a half-used buffer
    state = a.state_dict()
    expected = draw(a, 200)  # across the epoch boundary too
    b = BatchLoader(path, META, 4, T, seed=7, sampling=sampling)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, draw(b, 200)):
        assert (x1 == x2).all() and (y1 == y2).all()
    assert a.epochs() == b.epochs() > 1
