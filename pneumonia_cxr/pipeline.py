"""The tf.data input pipeline (``make_dataset``, ``load_images``) and its persistent cache of decoded,
resized images."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .common import IMAGE_SHAPE, IMAGE_SIZE, PIPELINE_VERSION, file_sha256


# ----------------------------------------------------------------------------------------------
# Decoding files in the graph
# ----------------------------------------------------------------------------------------------
def _decode_rgb(data):
    """Encoded image bytes (scalar tf.string) -> uint8 RGB (H, W, 3), as ``tf.io.decode_image``."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _decode_grey_or_rgb(data):
    """Encoded image bytes (scalar tf.string) -> uint8 (H, W, 1) for a 1-component (grey) JPEG, as
    most full-size X-rays are, else RGB (H, W, 3) as ``tf.io.decode_image(channels=3)``. Repeated into
    three channels, the grey decode is the RGB decode exactly; it saves the colour conversion and a
    third of the resizing."""
    import tensorflow as tf

    def components():
        return tf.io.extract_jpeg_shape(data)[2]

    grey_jpeg = tf.cond(tf.io.is_jpeg(data), components, lambda: tf.constant(3)) == 1
    image = tf.cond(grey_jpeg, lambda: tf.io.decode_jpeg(data, channels=1), lambda: _decode_rgb(data))
    image.set_shape([None, None, None])
    return image


def _is_grey(image):
    """True (scalar tf.bool) when the channels of an image (H, W, C) are all equal."""
    import tensorflow as tf

    return tf.reduce_all(tf.equal(image[:, :, :1], image))


def _resize_unscaled(image):
    """uint8 image (H, W, C) -> float32 (224, 224, C) with values in [0, 255], resized as
    :func:`preprocess_pixels` resizes (bilinear, antialias); an image already 224 x 224 is only cast
    (the resize is then the identity, bit for bit, and skipping it saves most of the time)."""
    import tensorflow as tf

    def resize():  # from uint8 directly: the same values as from float32, without the full-size copy
        return tf.image.resize(image, IMAGE_SIZE, method="bilinear", antialias=True)

    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], IMAGE_SIZE))
    resized = tf.cond(same_size, lambda: tf.cast(image, tf.float32), resize)
    return tf.ensure_shape(resized, [*IMAGE_SIZE, None])


def _to_rgb(image):
    """(…, H, W, 1 or 3) -> (…, H, W, 3): grey repeated into the three channels, RGB unchanged."""
    import tensorflow as tf

    shape = tf.concat([tf.shape(image)[:-1], [3]], axis=0)
    return tf.broadcast_to(image, shape)


def _read_for_model(path):
    """File path (scalar tf.string) -> model input float32 (224, 224, 3) in [0, 1]; the same values as
    ``preprocess_pixels(tf.io.decode_image(file, channels=3))``."""
    import tensorflow as tf

    resized = _resize_unscaled(_decode_grey_or_rgb(tf.io.read_file(path)))
    return tf.ensure_shape(_to_rgb(tf.clip_by_value(resized / 255.0, 0.0, 1.0)), IMAGE_SHAPE)


# ----------------------------------------------------------------------------------------------
# Persistent cache of decoded, resized images
# ----------------------------------------------------------------------------------------------
DECODED_CACHE_ENV_VAR = "CHEST_XRAY_DECODED_CACHE"
DEFAULT_DECODED_CACHE_DIR = Path("cache") / "decoded"  # from the repository root: git-ignored cache/decoded/
_ENTRY_MAGIC = b"CXRDEC1\n"  # 8 bytes: file format of an entry, version 1
_ENTRY_HEADER_BYTES = 32  # magic, int32 LE height, width, channels, payload bytes, farmhash64 (8)
_ENTRY_SUFFIX = ".u8"


def decoded_cache_folder(cache_dir: str | os.PathLike) -> Path:
    """Folder of the entries under ``cache_dir`` for this preprocessing: named after
    ``PIPELINE_VERSION`` and the image size, so a change of either starts a new, empty folder."""
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", f"{PIPELINE_VERSION}-{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}-uint8")
    return Path(cache_dir) / tag


def decoded_cache_entry(folder: str | os.PathLike, sha256: str) -> Path:
    """Entry file of the image whose file content has the hex SHA-256 ``sha256``, in ``folder``
    (from :func:`decoded_cache_folder`): ``folder/ab/abcdef….u8``."""
    return Path(folder) / sha256[:2] / f"{sha256}{_ENTRY_SUFFIX}"


def decoded_cache_entries(paths: Sequence[str], cache_dir: str | os.PathLike) -> list[Path]:
    """Entry file per image of ``paths`` (in order), keyed by the content of the file (SHA-256) and
    the preprocessing version: the same bytes under two names share one entry, and a file whose
    content changed gets a new one. Hashes the files on a few threads (about 0.1 s per 1,000 files
    of the 224 px set); creates nothing."""
    from concurrent.futures import ThreadPoolExecutor

    folder = decoded_cache_folder(cache_dir)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        digests = list(pool.map(file_sha256, [str(p) for p in paths]))
    return [decoded_cache_entry(folder, digest) for digest in digests]


def _entry_bytes(channels) -> int:
    """Size in bytes of an entry file of a 224 x 224 image with ``channels`` (1 or 3)."""
    return _ENTRY_HEADER_BYTES + IMAGE_SIZE[0] * IMAGE_SIZE[1] * channels


def _parse_entries(raw, channels):
    """Entry files' bytes (tf.string (B,)) expected to hold ``channels`` (1 or 3) -> (valid bool (B,),
    images uint8 (B, 224, 224, channels)).

    Valid means: the expected length, the magic, the header's shape and payload length, and the
    payload's farmhash64 all match. Never fails on a short or garbled file (it is then not valid and
    its image is garbage, never to be used).
    """
    import tensorflow as tf

    length = _entry_bytes(channels)
    data = tf.io.decode_raw(raw, tf.uint8, fixed_length=length)  # (B, length), cut or zero-padded
    header = tf.reshape(tf.cast(data[:, 8:24], tf.int64), [-1, 4, 4])
    fields = tf.reduce_sum(header * tf.constant([1, 1 << 8, 1 << 16, 1 << 24], tf.int64), axis=2)
    payload = data[:, _ENTRY_HEADER_BYTES:]
    expected = tf.stack([tf.constant(IMAGE_SIZE[0], tf.int64), tf.constant(IMAGE_SIZE[1], tf.int64),
                         tf.cast(channels, tf.int64), tf.cast(length - _ENTRY_HEADER_BYTES, tf.int64)])
    valid = (tf.equal(tf.strings.length(raw), length)
             & tf.reduce_all(tf.equal(data[:, :len(_ENTRY_MAGIC)], list(_ENTRY_MAGIC)), axis=1)
             & tf.reduce_all(tf.equal(fields, expected), axis=1)
             & tf.reduce_all(tf.equal(tf.fingerprint(payload), data[:, 24:_ENTRY_HEADER_BYTES]), axis=1))
    return valid, tf.reshape(payload, tf.stack([-1, IMAGE_SIZE[0], IMAGE_SIZE[1], channels]))


def _fingerprint(payload):
    """farmhash64 of a uint8 vector (n,) -> uint8 (8,) (TensorFlow's ``tf.fingerprint``)."""
    import tensorflow as tf

    return tf.reshape(tf.fingerprint(tf.expand_dims(payload, 0)), [8])


def _as_bytes(value) -> bytes:
    """A string tensor's value as ``tf.numpy_function`` passes it (bytes in a graph, a 0-d object
    array when run eagerly) -> bytes."""
    return value.item() if isinstance(value, np.ndarray) else value


def _write_entry(folder: bytes, source_bytes: bytes, image: np.ndarray, fingerprint: np.ndarray) -> np.ndarray:
    """Write one entry atomically (temporary file in the same folder, then ``os.replace``) under the
    SHA-256 of ``source_bytes`` (the bytes actually decoded, so an entry never holds the pixels of
    other content). ``image`` uint8 (224, 224, C); returns the bytes written as int64."""
    import tempfile

    folder, source_bytes = _as_bytes(folder), _as_bytes(source_bytes)
    path = decoded_cache_entry(folder.decode(), hashlib.sha256(source_bytes).hexdigest())
    height, width, channels = image.shape
    header = (_ENTRY_MAGIC + np.array([height, width, channels, image.size], "<i4").tobytes()
              + np.asarray(fingerprint, np.uint8).tobytes())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as out:
            out.write(header + np.ascontiguousarray(image, np.uint8).tobytes())
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(f"decoded cache: could not write {path} ({error})") from None
    return np.int64(len(header) + image.size)


def _quantise_grey_aware(resized):
    """float32 (224, 224, C) in [0, 255] -> uint8 rounded, (224, 224, 1) when the channels are equal
    (grey), else (224, 224, 3)."""
    import tensorflow as tf

    image = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    return tf.cond(_is_grey(image), lambda: image[:, :, :1], lambda: image)


def _build_entry(source, folder):
    """Decode the file ``source`` (scalar tf.string), resize to 224 x 224, round to uint8 and store it
    in the cache ``folder`` (scalar tf.string); returns uint8 (224, 224, 1 or 3)."""
    import tensorflow as tf

    data = tf.io.read_file(source)
    image = _quantise_grey_aware(_resize_unscaled(_decode_grey_or_rgb(data)))
    written = tf.numpy_function(_write_entry, [folder, data, image, _fingerprint(tf.reshape(image, [-1]))],
                                tf.int64, stateful=True)
    with tf.control_dependencies([written]):
        return tf.identity(image)


def _rebuild_invalid(sources, images, valid, folder):
    """``images`` uint8 (B, 224, 224, C) with each image whose entry was not valid decoded again from
    its source and its entry rewritten (run eagerly, in a ``tf.py_function``: rare)."""
    import tensorflow as tf

    images = images.numpy().copy()
    for i in np.flatnonzero(~valid.numpy()):
        rebuilt = _build_entry(sources[i], folder).numpy()
        if rebuilt.shape != images[i].shape:
            raise ValueError(f"decoded cache: {sources[i].numpy().decode()} changed channels while being "
                             f"read ({images[i].shape} expected, {rebuilt.shape} now); read it again")
        images[i] = rebuilt
    return tf.constant(images)


def _entries_or_rebuild(sources, raw, channels, folder):
    """uint8 (B, 224, 224, ``channels``) of images from their entries' bytes ``raw`` (tf.string (B,));
    a corrupt or truncated entry is never used: that image is decoded from ``sources`` and rewritten.
    (The rebuild is one ``tf.py_function``: a large untaken branch would slow every batch down.)"""
    import tensorflow as tf

    valid, images = _parse_entries(raw, channels)
    fixed = tf.cond(tf.reduce_all(valid), lambda: images,
                    lambda: tf.py_function(_rebuild_invalid, [sources, images, valid, folder], tf.uint8))
    return tf.ensure_shape(fixed, images.shape)


def _entry_channels(entry: Path) -> int | None:
    """Channels (1 or 3) of the entry file by its size, None when it is missing or of no entry's
    size (cheap: the content is checked when it is read)."""
    try:
        payload = entry.stat().st_size - _ENTRY_HEADER_BYTES
    except OSError:
        return None
    pixels = IMAGE_SIZE[0] * IMAGE_SIZE[1]
    return {pixels: 1, 3 * pixels: 3}.get(payload)


def fill_decoded_cache(paths: Sequence[str], cache_dir: str | os.PathLike) -> list[Path]:
    """Entry file per image of ``paths`` (in order; :func:`decoded_cache_entries`), after decoding
    and writing, in parallel on all cores, the images whose entry is missing or of a wrong size."""
    import tensorflow as tf

    entries = decoded_cache_entries(paths, cache_dir)
    missing = {str(entry): str(path) for path, entry in zip(paths, entries) if _entry_channels(entry) is None}
    if missing:
        folder = str(decoded_cache_folder(cache_dir))
        builds = tf.data.Dataset.from_tensor_slices(list(missing.values())).map(
            lambda source: tf.shape(_build_entry(source, folder)), num_parallel_calls=tf.data.AUTOTUNE)
        for _ in builds.prefetch(tf.data.AUTOTUNE):
            pass
    return entries


def read_decoded_entry(path: str | os.PathLike) -> np.ndarray | None:
    """The image stored in a decoded-cache entry, uint8 (224, 224, 1 or 3), or None when the file is
    missing, truncated or corrupt (checked as the pipeline checks it)."""
    import tensorflow as tf

    channels = _entry_channels(Path(path))
    if channels is None:
        return None
    valid, images = _parse_entries(tf.io.read_file(str(path))[None], channels)
    return images.numpy()[0] if bool(valid[0]) else None


def _resolve_decoded_cache(decoded_cache_dir: str | os.PathLike | bool | None) -> Path | None:
    """The cache folder to use: ``decoded_cache_dir``; when None, ``$CHEST_XRAY_DECODED_CACHE`` if set;
    False or "" turns the cache off."""
    if decoded_cache_dir is None:
        decoded_cache_dir = os.environ.get(DECODED_CACHE_ENV_VAR) or None
    if decoded_cache_dir is None or decoded_cache_dir is False or str(decoded_cache_dir) == "":
        return None
    if decoded_cache_dir is True:
        raise ValueError("decoded_cache_dir: give a folder (e.g. DEFAULT_DECODED_CACHE_DIR), not True")
    return Path(decoded_cache_dir)


def _grey_batch_to_rgb(images):
    """uint8 grey images (B, 224, 224, 1) -> float32 RGB (B, 224, 224, 3) in [0, 1], the values of
    ``cast / 255`` repeated into three channels (by a product with ones, exact and faster on a CPU
    than broadcasting)."""
    import tensorflow as tf

    scaled = tf.cast(images, tf.float32) / 255.0
    rgb = tf.matmul(tf.reshape(scaled, [-1, 1]), tf.ones([1, 3], tf.float32))
    return tf.reshape(rgb, tf.concat([tf.shape(images)[:-1], [3]], axis=0))


def _decoded_cache_images(paths: list[str], cache_dir: Path):
    """(dataset of one element per image, function applied to each batch) reading the decoded cache,
    filled first for the images it lacks (:func:`fill_decoded_cache`).

    When every entry is grey (1 channel), an element is {"source": path, "entry": file bytes} (what an
    in-memory cache then holds: 50 kB an image) and the batch function checks and unpacks a whole
    batch at once into float32 RGB (B, 224, 224, 3) in [0, 1]. Otherwise the elements are already
    float32 (224, 224, 3) in [0, 1] and the batch function is None."""
    import tensorflow as tf

    entries = fill_decoded_cache(paths, cache_dir)
    channels = [_entry_channels(entry) for entry in entries]
    folder = str(decoded_cache_folder(cache_dir))
    slices = (paths, [str(entry) for entry in entries], channels)

    def read_bytes(source, entry, _):
        return {"source": source, "entry": tf.io.read_file(entry)}

    def grey_batch(element):
        sources, raw = element["source"], element["entry"]
        return tf.ensure_shape(_grey_batch_to_rgb(_entries_or_rebuild(sources, raw, 1, folder)), [None, *IMAGE_SHAPE])

    def read_rgb(source, entry, channel_count):
        image = _entries_or_rebuild(source[None], tf.io.read_file(entry)[None], channel_count, folder)[0]
        return tf.ensure_shape(_to_rgb(tf.cast(image, tf.float32) / 255.0), IMAGE_SHAPE)

    all_grey = all(c == 1 for c in channels)
    dataset = tf.data.Dataset.from_tensor_slices(slices).map(
        read_bytes if all_grey else read_rgb, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset, (grey_batch if all_grey else None)


def make_dataset(paths: Sequence[str], targets: Sequence[int] | None = None, batch_size: int = 16,
                 shuffle: bool = False, seed: int = 0, cache: bool | str = True,
                 augment: Callable | None = None,
                 decoded_cache_dir: str | os.PathLike | bool | None = None):
    """tf.data pipeline: read, decode, resize to 224 x 224, scale to [0, 1], cache, batch, prefetch.

    Yields images float32 (B, 224, 224, 3) (and targets float32 (B,) when given). The decoded
    images are cached (in memory, or in the file prefix given as ``cache``) before shuffling and
    augmentation, so only the first pass decodes JPEGs (without shuffle the batches themselves are
    cached). Without shuffle, the order is ``paths``. Files are decoded in parallel (all cores).

    ``decoded_cache_dir`` (default ``$CHEST_XRAY_DECODED_CACHE`` when set, e.g.
    ``DEFAULT_DECODED_CACHE_DIR``; False turns it off): a folder of decoded, resized uint8 images kept
    between runs, one file per image content (grey images stored as one channel), so the first epoch
    of later runs reads them instead of decoding. The call hashes the files and first decodes (in
    parallel) those not in the cache yet. Images already 224 x 224 (the 224 px set) come out
    identical to the pipeline without it; resized ones differ by the rounding to uint8 (at most half a
    grey level, 0.5/255). Entries are checked (length, checksum) and rebuilt when corrupt. When all
    the images are grey, the in-memory cache of a shuffled dataset then holds the entries' bytes
    (12 times less memory than float32 RGB), checked and made float32 RGB batch by batch.
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]
    cache_folder = _resolve_decoded_cache(decoded_cache_dir)
    if cache_folder is None:
        dataset, per_batch = _plain_images(paths), None
    else:
        dataset, per_batch = _decoded_cache_images(paths, cache_folder)
    if targets is not None:
        labels = tf.data.Dataset.from_tensor_slices(np.asarray(targets, dtype=np.float32))
        dataset = tf.data.Dataset.zip((dataset, labels))
    cache_name = "" if cache is True else str(cache)
    if shuffle:
        if cache:
            dataset = dataset.cache(cache_name)
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = _map_images(dataset.batch(batch_size), per_batch, targets is not None)
    if cache and not shuffle:
        dataset = dataset.cache(cache_name)
    augment_batch = None if augment is None else (lambda x: augment(x, training=True))
    return _map_images(dataset, augment_batch, targets is not None).prefetch(tf.data.AUTOTUNE)


def _plain_images(paths: list[str]):
    """Dataset of model inputs float32 (224, 224, 3) in [0, 1], one per file, decoded in parallel."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(paths).map(_read_for_model, num_parallel_calls=tf.data.AUTOTUNE)


def _map_images(dataset, function: Callable | None, with_targets: bool):
    """``dataset`` with ``function`` applied (in parallel) to its images, targets passed through;
    unchanged when ``function`` is None."""
    import tensorflow as tf

    if function is None:
        return dataset
    if with_targets:
        return dataset.map(lambda x, y: (function(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.map(function, num_parallel_calls=tf.data.AUTOTUNE)


def load_images(paths: Sequence[str]) -> np.ndarray:
    """Model inputs float32 (N, 224, 224, 3) in [0, 1] for the files in ``paths``, in order."""
    return np.concatenate([batch for batch in make_dataset(paths, cache=False).as_numpy_iterator()])
