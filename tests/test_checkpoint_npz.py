"""The npz export, scanrnn.checkpoint.save_params / load_params.

Round trips are exact in value and dtype (bfloat16 included); the path means
the same file with or without ``.npz``; every damaged or foreign file gives a
ValueError that names it; and a save killed at a random moment (SIGKILL)
leaves a complete file, the previous version or the new one.
"""

import contextlib
import doctest
import inspect
import os
import random
import signal
import subprocess
import sys
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scanrnn as sr
from scanrnn import checkpoint
from scanrnn._checks import InputTypeError
from scanrnn.checkpoint import load_params, save_params

NOT_OURS = r"not an \.npz file written by scanrnn\.checkpoint\.save_params"


@pytest.fixture
def params(key):
    return sr.serial(sr.recurrent(sr.lstm(3)), sr.dense(1)).init(key, 2)


def assert_same(loaded, expected):
    """Same structure, and every leaf has the same dtype, shape and bits."""
    assert jax.tree.structure(loaded) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
        assert isinstance(a, jax.Array)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def cast(params, dtype):
    """``params`` as ``dtype``, with values that use the dtype's range (not only 0 and 1)."""
    if jnp.issubdtype(dtype, jnp.integer):
        return jax.tree.map(lambda a: (a * 100).astype(dtype), params)
    if dtype == jnp.bool_:
        return jax.tree.map(lambda a: a > 0, params)
    return jax.tree.map(lambda a: a.astype(dtype), params)


@pytest.mark.parametrize(
    "dtype", [jnp.float32, jnp.float64, jnp.float16, jnp.bfloat16, jnp.int32, jnp.int8, jnp.uint8, jnp.bool_]
)
def test_round_trip_is_exact_for_every_dtype(tmp_path, params, dtype):
    params = cast(params, dtype)
    save_params(tmp_path / "params.npz", params)
    assert_same(load_params(tmp_path / "params.npz", params), params)
    # A like of other values (the same model, another key) is filled with the saved ones.
    other = cast(sr.serial(sr.recurrent(sr.lstm(3)), sr.dense(1)).init(jax.random.key(1), 2), dtype)
    assert_same(load_params(tmp_path / "params.npz", other), params)


def test_bfloat16_is_stored_as_its_bits_with_the_dtype_recorded(tmp_path, params):
    params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    save_params(tmp_path / "params", params)
    with np.load(tmp_path / "params.npz") as data:
        assert data["[0].w_ih"].dtype == np.uint16
        np.testing.assert_array_equal(data["[0].w_ih"], np.asarray(params[0].w_ih).view(np.uint16))
        assert "bfloat16" in str(data["__scanrnn_checkpoint__"])
    loaded = load_params(tmp_path / "params", params)
    assert loaded[0].w_ih.dtype == jnp.bfloat16
    assert_same(loaded, params)


def test_loading_into_another_dtype_raises_naming_the_leaf_and_both_dtypes(tmp_path, params):
    save_params(tmp_path / "params", jax.tree.map(lambda a: a.astype(jnp.bfloat16), params))
    with pytest.raises(ValueError, match=r"'\[0\]\.w_ih' was saved as bfloat16, `like` has float32"):
        load_params(tmp_path / "params", params)
    save_params(tmp_path / "params", params)
    with pytest.raises(ValueError, match=r"'\[0\]\.w_ih' was saved as float32, `like` has float64"):
        load_params(tmp_path / "params", cast(params, jnp.float64))


def test_like_may_be_shape_dtype_structs(tmp_path, params):
    save_params(tmp_path / "params", params)
    assert_same(load_params(tmp_path / "params", jax.eval_shape(lambda: params)), params)


def test_a_single_array_round_trips(tmp_path):
    params = jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3)
    save_params(tmp_path / "params", params)
    assert_same(load_params(tmp_path / "params", params), params)
    with pytest.raises(ValueError, match=r"leaf '' \(the root\) was saved with shape \(2, 3\), `like` expects \(3, 2"):
        load_params(tmp_path / "params", params.T)


def test_the_path_means_the_same_file_with_or_without_npz(tmp_path, params):
    save_params(str(tmp_path / "ckpt"), params)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]
    assert_same(load_params(str(tmp_path / "ckpt"), params), params)
    assert_same(load_params(tmp_path / "ckpt.npz", params), params)
    newer = jax.tree.map(lambda a: a + 1, params)
    save_params(tmp_path / "ckpt.npz", newer)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]
    assert_same(load_params(tmp_path / "ckpt", params), newer)
    # The file opens with plain NumPy under the same names as before.
    with np.load(tmp_path / "ckpt.npz") as data:
        np.testing.assert_array_equal(data["[0].w_hh"], newer[0].w_hh)


def test_files_written_before_the_dtypes_were_recorded_still_load(tmp_path, params):
    def old_save(path, params):  # save_params as it was: np.savez of each leaf under its tree path
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        np.savez(path, **{jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in leaves})

    old_save(tmp_path / "old", params)
    assert_same(load_params(tmp_path / "old", params), params)
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    old_save(tmp_path / "old_bf16", bf16)  # bfloat16 was written as raw bytes, dtype |V2
    assert_same(load_params(tmp_path / "old_bf16", bf16), bf16)
    with pytest.raises(ValueError, match=r"'\[0\]\.w_ih' was saved as float32, `like` has bfloat16"):
        load_params(tmp_path / "old", bf16)


def test_missing_file_and_directory(tmp_path, params):
    with pytest.raises(FileNotFoundError, match=r"no params file at '.*ckpt\.npz' \(the path '.*ckpt' with \.npz"):
        load_params(tmp_path / "ckpt", params)
    with pytest.raises(FileNotFoundError, match=r"no params file at '.*ckpt\.npz'$"):
        load_params(tmp_path / "ckpt.npz", params)
    with pytest.raises(FileNotFoundError, match=r"directory '.*nowhere' does not exist \(save_params creates no"):
        save_params(tmp_path / "nowhere" / "params", params)
    assert not (tmp_path / "nowhere").exists()


def test_a_directory_is_refused(tmp_path, params):
    (tmp_path / "run").mkdir()
    for function, argument in ((save_params, params), (load_params, params)):
        with pytest.raises(ValueError, match=r"'.*run' is a directory, not a params file"):
            function(tmp_path / "run", argument)
    (tmp_path / "run.npz").mkdir()
    with pytest.raises(ValueError, match=r"'.*run\.npz' is a directory"):
        save_params(tmp_path / "run.npz", params)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", r"the file is empty"),
        (b"step,loss\n0,1.0\n", r"it is not a zip archive of arrays"),
        (b"\x93NUMPY", r"it is not a zip archive of arrays"),
        (b"PK\x03\x04 and then nothing", r"it is truncated or damaged"),
    ],
)
def test_a_foreign_file_is_refused(tmp_path, params, content, problem):
    (tmp_path / "params.npz").write_bytes(content)
    with pytest.raises(ValueError, match=rf"'.*params\.npz' is {NOT_OURS} \({problem}"):
        load_params(tmp_path / "params.npz", params)


def test_a_truncated_file_is_refused(tmp_path, params):
    save_params(tmp_path / "params", params)
    whole = (tmp_path / "params.npz").read_bytes()
    for size in (1, 3, 10, len(whole) // 3, len(whole) // 2, len(whole) - 22, len(whole) - 1):
        (tmp_path / "params.npz").write_bytes(whole[:size])
        with pytest.raises(ValueError, match=rf"'.*params\.npz' is {NOT_OURS} \(it is"):
            load_params(tmp_path / "params", params)


def test_a_damaged_file_is_refused(tmp_path, params):
    save_params(tmp_path / "params", params)
    whole = bytearray((tmp_path / "params.npz").read_bytes())
    with np.load(tmp_path / "params.npz") as data:  # flip one bit inside the saved w_hh values
        offset = whole.index(data["[0].w_hh"].tobytes())
    whole[offset + 5] ^= 1
    (tmp_path / "params.npz").write_bytes(bytes(whole))
    with pytest.raises(ValueError, match=rf"{NOT_OURS} \(it is truncated or damaged: BadZipFile: Bad CRC-32"):
        load_params(tmp_path / "params", params)


@pytest.mark.slow
def test_an_npz_of_other_arrays_names_the_missing_and_the_unexpected(tmp_path, params):
    np.savez(tmp_path / "other.npz", x=np.zeros(3), **{"[0].w_ih": np.zeros((12, 2), np.float32)})
    with pytest.raises(
        ValueError,
        match=r"'.*other\.npz' does not hold the leaves expected from `like`: missing \(expected, not in the file\) "
        r"'\[0\]\.b', '\[0\]\.w_hh', '\[1\]\.b', '\[1\]\.w'; unexpected \(in the file, not expected\) 'x'$",
    ):
        load_params(tmp_path / "other", params)
    save_params(tmp_path / "lstm", params)
    gru = sr.serial(sr.recurrent(sr.gru(3)), sr.dense(1)).init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=r"missing .* '\[0\]\.b_hh', '\[0\]\.b_ih'; unexpected .* '\[0\]\.b'$"):
        load_params(tmp_path / "lstm", gru)
    wider = sr.serial(sr.recurrent(sr.lstm(4)), sr.dense(1)).init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=r"'\[0\]\.w_ih' was saved with shape \(12, 2\), `like` expects \(16, 2\)"):
        load_params(tmp_path / "lstm", wider)


def test_an_npz_that_is_not_ours_inside_is_refused(tmp_path, params):
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    np.savez(tmp_path / "objects.npz", **{name: np.array([None], dtype=object) for name in names})
    with pytest.raises(ValueError, match=rf"{NOT_OURS} \(it is truncated or damaged: ValueError: Object arrays"):
        load_params(tmp_path / "objects", params)
    with zipfile.ZipFile(tmp_path / "text.npz", "w") as archive:
        archive.writestr("notes.txt", "not an array")
    with pytest.raises(ValueError, match=rf"{NOT_OURS} \(its member 'notes.txt' is not a \.npy array\)"):
        load_params(tmp_path / "text", params)
    np.savez(tmp_path / "metadata.npz", __scanrnn_checkpoint__=np.array("{not json"))
    with pytest.raises(ValueError, match=rf"{NOT_OURS} \(its __scanrnn_checkpoint__ entry is not ours"):
        load_params(tmp_path / "metadata", params)
    newer = '{"format": "scanrnn.checkpoint.save_params", "version": 2, "dtypes": {}}'
    np.savez(tmp_path / "newer.npz", __scanrnn_checkpoint__=np.array(newer))
    with pytest.raises(ValueError, match=r"'.*newer\.npz' has format version 2; this scanrnn reads version 1"):
        load_params(tmp_path / "newer", params)


def test_params_must_be_a_non_empty_tree_of_arrays(tmp_path, params):
    for bad, problem in (
        ({"w": jnp.ones(2), "scale": 0.5}, r"params leaf \"\['scale'\]\" must be an array, got float 0\.5"),
        ({"w": jax.random.key(0)}, r"params leaf \"\['w'\]\" must be a numeric array, got dtype key<fry>"),
        ({"w": np.array(["a"])}, r"params leaf \"\['w'\]\" must be a numeric array, got dtype <U1"),
    ):
        with pytest.raises(InputTypeError, match=problem):
            save_params(tmp_path / "bad", bad)
    for empty in ({}, (), None, [None]):
        with pytest.raises(ValueError, match="params has no leaves, so there is nothing to save or load"):
            save_params(tmp_path / "empty", empty)
    save_params(tmp_path / "params", params)
    with pytest.raises(ValueError, match="like has no leaves"):
        load_params(tmp_path / "params", {})
    assert sorted(os.listdir(tmp_path)) == ["params.npz"]


def test_float64_is_refused_rather_than_cast_when_x64_is_off(tmp_path):
    params = {"w": np.arange(3.0)}
    save_params(tmp_path / "params", params)
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match=r"\"\['w'\]\" is float64, which JAX would store as float32"):
            load_params(tmp_path / "params", params)


def test_a_failed_save_keeps_the_old_file_and_removes_its_temporary(tmp_path, params, monkeypatch):
    save_params(tmp_path / "params", params)

    def failing_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left"):
        save_params(tmp_path / "params", jax.tree.map(lambda a: a + 1, params))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["params.npz"]
    assert_same(load_params(tmp_path / "params", params), params)


@pytest.mark.skipif(os.name != "posix", reason="leftovers are recognised by process id on POSIX only")
def test_a_save_removes_only_leftovers_of_ended_processes(tmp_path, params):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(timeout=30)
    host = checkpoint._HOST
    leftover = f".params.npz.{host}-{ended.pid}.0123abcd.tmp"
    kept = [
        f".params.npz.{host}-{os.getpid()}.0123abcd.tmp",  # a running process's save
        f".params.npz.{'f' * 8 if host != 'f' * 8 else '0' * 8}-{ended.pid}.0123abcd.tmp",  # another host's
        f".other.npz.{host}-{ended.pid}.0123abcd.tmp",  # another destination's
        f".params.npz.{host}-{ended.pid}.0123abcd.tmp.bak",
        "notes.txt",
    ]
    for name in [leftover, *kept]:
        (tmp_path / name).write_bytes(b"")
    save_params(tmp_path / "params", params)
    assert sorted(os.listdir(tmp_path)) == sorted(["params.npz", *kept])


def version_params(version):
    """About 4 MB of params, every value equal to ``version``."""
    layers = [{"w": np.full((256, 512), version, np.float32), "b": np.full(512, version, np.float32)} for _ in range(8)]
    return {"layers": layers, "step": np.array(version, np.int32)}


SAVER = '''
import os
import signal
import sys

import numpy as np

from scanrnn.checkpoint import save_params

signal.alarm(60)  # bound this process, whatever the test does
destination, logs = sys.argv[1], sys.argv[2]
{version_params}
for line in sys.stdin:  # one trial a line: fork a child that saves version after version
    trial, version = map(int, line.split())
    pid = os.fork()
    if pid == 0:
        try:
            signal.alarm(30)
            log = os.open(os.path.join(logs, f"trial{{trial}}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            while True:
                os.write(log, b"start %d\\n" % version)
                save_params(destination, version_params(version))
                os.write(log, b"done %d\\n" % version)
                version += 1
        finally:
            os._exit(1)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
'''


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the savers are forked")
def test_a_save_killed_at_any_moment_leaves_a_complete_file(tmp_path):
    """SIGKILL a process that saves version after version; the file is always one whole version.

    One helper process imports scanrnn once and forks a saver per trial (a
    fresh interpreter would spend seconds importing JAX); the test kills the
    saver after a seeded random delay, and the helper reaps it.
    """
    run, logs = tmp_path / "run", tmp_path / "logs"
    run.mkdir()
    logs.mkdir()
    destination = run / "params.npz"
    save_params(destination, version_params(0))
    script = tmp_path / "saver.py"
    script.write_text(SAVER.format(version_params=inspect.getsource(version_params)))
    rng = random.Random(0)
    trials, killed_in_a_save, killed_mid_write = 0, 0, 0
    saver = subprocess.Popen(
        [sys.executable, str(script), str(destination), str(logs)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    running = set()
    try:
        on_disk = 0
        # Ten trials, or more (at most 30) until a kill has landed while a temporary file was being written.
        while trials < 10 or (killed_mid_write == 0 and trials < 30):
            saver.stdin.write(f"{trials} {on_disk + 1}\n")
            saver.stdin.flush()
            pid = int(saver.stdout.readline())
            running.add(pid)
            time.sleep(rng.uniform(0.05, 0.3))
            os.kill(pid, signal.SIGKILL)
            status = int(saver.stdout.readline())
            running.discard(pid)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
            lines = (logs / f"trial{trials}.log").read_text().splitlines()
            started = [int(line.split()[1]) for line in lines if line.startswith("start ")]
            done = [int(line.split()[1]) for line in lines if line.startswith("done ")]
            killed_in_a_save += bool(started) and started[-1] != (done[-1] if done else None)
            # The kill left the destination whole: one version, the last one saved or the one in flight.
            loaded = load_params(destination, version_params(0))
            version = int(loaded["step"])
            assert (done[-1] if done else on_disk) <= version <= (started[-1] if started else on_disk)
            assert_same(loaded, version_params(version))
            # Beside it, at most the temporary file of the save that was killed (the next save removes it).
            leftovers = sorted(set(os.listdir(run)) - {"params.npz"})
            assert len(leftovers) <= 1, leftovers
            assert all(name.startswith(".params.npz.") and f"-{pid}." in name for name in leftovers), leftovers
            killed_mid_write += len(leftovers)
            on_disk = version
            trials += 1
    finally:
        for pid in running:  # a saver not yet reaped
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        saver.kill()
        saver.wait(timeout=30)
        saver.stdin.close()
        saver.stdout.close()
    print(f"{trials} trials: killed in a save {killed_in_a_save}, with its temporary file written {killed_mid_write}")
    assert killed_mid_write >= 1, f"in {trials} trials no kill landed while a file was being written"
    save_params(destination, version_params(on_disk + 1))
    assert os.listdir(run) == ["params.npz"]
    assert_same(load_params(destination, version_params(0)), version_params(on_disk + 1))


@pytest.mark.slow
def test_docstring_examples():
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"):
        result = doctest.testmod(checkpoint, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
