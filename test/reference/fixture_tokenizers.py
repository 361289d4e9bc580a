#!/usr/bin/python3
"""Tokenizer files for random-weight fixtures, in the format each family's publisher
uses, and a plain-Python decoder for each (what the text end-to-end test compares the
executables' output with).

    byte_level(out_dir, specials, specials_first)
        tokenizer.json: GPT-2 style byte-level BPE (ByteLevel pre-tokenizer with the
        GPT-2 regex, the byte-to-unicode map, "left right" merges): the 256 byte
        symbols, merges learned from TRAINING_TEXT, and the family's special tokens,
        first (the tokenizers trainer's layout: physics, linnet) or last (GPT-2's,
        <|endoftext|> after the merges: SlimMoE)
    tiktoken(out_dir)
        gpt2.tiktoken: the same byte-level vocabulary as tiktoken ranks (rank = id,
        "<base64 bytes> <rank>" lines), for Moonlight, whose <|endoftext|> (50256)
        and role ids (50257-50259) come from its family description
    byte_fallback(out_dir)
        tokenizer.json: Llama-style BPE with <0xNN> byte fallback, Prepend/Replace
        normalizers and [left, right] merges, with SSMoELM's special tokens at the
        card's ids (<bos> 0 ... <|eot|> 6)

Each returns a Decoder: .pieces (id -> bytes), .special (control ids, which print
nothing), .decode(ids) -> str (UTF-8 with U+FFFD replacement, as the runtime).
"""
from __future__ import annotations

import base64
import collections
import json
import os
import re
from typing import Dict, Iterable, List, Sequence, Set, Tuple

META = "\u2581"
SSMOELM_SPECIALS = ["<bos>", "<eos>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>",
                    "<|eot|>"]
# Moonlight's ids beyond GPT-2's ranks (spec section 5; the family description).
MOONLIGHT_SPECIALS = {50256: "<|endoftext|>", 50257: "<|system|>", 50258: "<|user|>",
                      50259: "<|assistant|>"}

# The merges are learned from this text: a few hundred tokens of English, enough for
# whole common words and many fragments (a multi-byte character among them).
TRAINING_TEXT = (
    "The quick brown fox jumps over the lazy dog. A mixture of experts routes every "
    "token to a few of its experts, and the router learns which expert knows what. "
    "In the beginning there was the word, and the word was with the model. "
    "Hello, how are you today? I am well, thank you, and I hope that you are well too. "
    "Numbers such as 1, 2, 3 and 2026 are written with digits. The weather is fine; "
    "the sea is calm and the ships sail on the water to the other side of the world. "
    "We met at the café. Once upon a time, a small model learned to write: it read "
    "books, letters and numbers (like 42 or 3.14) and wrote them back, line by line. "
    "What is a mixture of experts? It is a network whose layers choose their experts. "
) * 3

# GPT-2's pre-tokenizer regex ('s|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)
# in the classes of Python's re: close enough to split the training text into words
# (the executable's tokenizer, not this, encodes the test's text).
GPT2_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+")


class Decoder:
    def __init__(self, pieces: Dict[int, bytes], special: Set[int], strip_first_space=False):
        self.pieces = pieces
        self.special = special
        # Llama's decoder strips the space its normalizer put before the first word.
        self.strip_first_space = strip_first_space

    @property
    def size(self) -> int:
        return max(self.pieces) + 1

    def decode(self, ids: Iterable[int], at_start: bool = False) -> str:
        """The text of `ids` (ids without a piece print nothing); `at_start`: the ids
        begin a text (a prompt), not continue one (a reply)."""
        out = b"".join(self.pieces.get(i, b"") for i in ids if i not in self.special)
        if at_start and self.strip_first_space and out.startswith(b" "):
            out = out[1:]
        return out.decode("utf-8", errors="replace")


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's printable stand-ins for the 256 bytes."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
                 + list(range(ord("\xae"), ord("\xff") + 1)))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _learn_merges(words: Dict[str, int], count: int) -> List[Tuple[str, str]]:
    """Greedy BPE: `words` (word -> frequency) start as single characters; the most
    frequent adjacent pair is merged, `count` times (or until nothing pairs)."""
    split = {w: list(w) for w in words}
    merges = []
    for _ in range(count):
        pairs: Dict[Tuple[str, str], int] = collections.Counter()
        for w, n in words.items():
            s = split[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        for w in words:
            s, out, i = split[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            split[w] = out
    return merges


def _byte_level_model(merges: int) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(the byte-level symbols in id order, the learned merges): the 256 byte symbols
    in GPT-2's order (by stand-in code point), then one token per new merge."""
    to_unicode = bytes_to_unicode()
    words = collections.Counter("".join(to_unicode[b] for b in w.encode())
                                for w in GPT2_SPLIT.findall(TRAINING_TEXT))
    learned = _learn_merges(words, merges)
    symbols = sorted(to_unicode.values())
    for a, b in learned:
        if a + b not in symbols:
            symbols.append(a + b)
    return symbols, learned


def _symbol_bytes(symbol: str) -> bytes:
    from_unicode = {c: b for b, c in bytes_to_unicode().items()}
    return bytes(from_unicode[c] for c in symbol)


def _added_token(i: int, content: str) -> dict:
    return {"id": i, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True}


def _write_json(out_dir: str, name: str, value: dict) -> None:
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False)


def byte_level(out_dir: str, specials: Sequence[str] = ("<|endoftext|>",),
               specials_first: bool = False, merges: int = 300) -> Decoder:
    symbols, learned = _byte_level_model(merges)
    order = (list(specials) + symbols) if specials_first else (symbols + list(specials))
    vocab = {s: i for i, s in enumerate(order)}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(vocab[s], s) for s in specials],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True,
                           "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": ["%s %s" % m for m in learned]},
    }
    _write_json(out_dir, "tokenizer.json", tok)
    pieces = {vocab[s]: _symbol_bytes(s) for s in symbols}
    pieces.update({vocab[s]: s.encode() for s in specials})
    return Decoder(pieces, {vocab[s] for s in specials})


def tiktoken(out_dir: str, merges: int = 300) -> Decoder:
    """Ranks = ids of the byte-level vocabulary (merge order); no special tokens in
    the file: Moonlight's description supplies them."""
    symbols, _ = _byte_level_model(merges)
    pieces = {i: _symbol_bytes(s) for i, s in enumerate(symbols)}
    with open(os.path.join(out_dir, "gpt2.tiktoken"), "w") as f:
        for i in sorted(pieces):
            f.write("%s %d\n" % (base64.b64encode(pieces[i]).decode(), i))
    pieces.update({i: s.encode() for i, s in MOONLIGHT_SPECIALS.items()})
    return Decoder(pieces, set(MOONLIGHT_SPECIALS))


def byte_fallback(out_dir: str, merges: int = 200) -> Decoder:
    vocab: Dict[str, int] = {s: i for i, s in enumerate(SSMOELM_SPECIALS)}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for c in sorted(set(TRAINING_TEXT.replace(" ", META)) | {META}):
        vocab.setdefault(c, len(vocab))
    learned = _learn_merges(collections.Counter(META + w for w in TRAINING_TEXT.split()),
                            merges)
    for a, b in learned:
        vocab.setdefault(a + b, len(vocab))
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(i, s) for i, s in enumerate(SSMOELM_SPECIALS)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": META},
            {"type": "Replace", "pattern": {"String": " "}, "content": META}]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": META}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in learned]},
    }
    _write_json(out_dir, "tokenizer.json", tok)
    pieces: Dict[int, bytes] = {}
    for piece, i in vocab.items():
        if i < len(SSMOELM_SPECIALS):
            pieces[i] = piece.encode()
        elif piece.startswith("<0x") and len(piece) == 6:
            pieces[i] = bytes([int(piece[3:5], 16)])
        else:
            pieces[i] = piece.replace(META, " ").encode()
    return Decoder(pieces, set(range(len(SSMOELM_SPECIALS))), strip_first_space=True)
