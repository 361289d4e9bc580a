#!/usr/bin/python3
"""Tokenizer files for random-weight fixtures, in the format each family's publisher
uses, and a plain-Python decoder for each (what the text end-to-end test compares the
executables' output with).

    byte_level(out_dir)      tokenizer.json: GPT-2 style byte-level BPE (physics,
                             linnet, SlimMoE); the bundled examples/kjv tokenizer,
                             2048 tokens, <|endoftext|> = 0
    tiktoken(out_dir)        gpt2.tiktoken: the same vocabulary as tiktoken ranks
                             (rank = id), for Moonlight, whose special and role ids
                             (50256-50259) come from its family description
    byte_fallback(out_dir)   tokenizer.json: Llama-style BPE with <0xNN> byte
                             fallback and Prepend/Replace normalizers, with SSMoELM's
                             special tokens at the card's ids (<bos> 0 ... <|eot|> 6)

Each returns a Decoder: .vocab (ids the tokenizer has), .special (control ids, which
print nothing), .decode(ids) -> str (UTF-8 with U+FFFD replacement, as the runtime).
"""
from __future__ import annotations

import base64
import collections
import json
import os
from typing import Dict, Iterable, List, Set

_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
KJV_TOKENIZER = os.path.join(_ROOT, "examples", "kjv", "model", "tokenizer.json")

META = "\u2581"
SSMOELM_SPECIALS = ["<bos>", "<eos>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>",
                    "<|eot|>"]

# The byte-fallback vocabulary's merges are learned from this text: a few hundred
# tokens of English, enough for whole common words and many fragments.
TRAINING_TEXT = (
    "The quick brown fox jumps over the lazy dog. A mixture of experts routes every "
    "token to a few of its experts, and the router learns which expert knows what. "
    "In the beginning there was the word, and the word was with the model. "
    "Hello, how are you today? I am well, thank you, and I hope that you are well too. "
    "Numbers such as 1, 2, 3 and 2026 are written with digits. The weather is fine; "
    "the sea is calm and the ships sail on the water to the other side of the world. "
) * 3


class Decoder:
    def __init__(self, pieces: Dict[int, bytes], special: Set[int]):
        self.pieces = pieces
        self.special = special

    @property
    def size(self) -> int:
        return max(self.pieces) + 1

    def decode(self, ids: Iterable[int]) -> str:
        out = b"".join(self.pieces.get(i, b"") for i in ids if i not in self.special)
        return out.decode("utf-8", errors="replace")


def _bytes_to_unicode() -> Dict[int, str]:
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


def _kjv() -> dict:
    with open(KJV_TOKENIZER, encoding="utf-8") as f:
        return json.load(f)


def _byte_level_pieces(tok: dict) -> Decoder:
    unmap = {c: b for b, c in _bytes_to_unicode().items()}
    special = {a["id"] for a in tok["added_tokens"] if a.get("special")}
    pieces = {i: bytes(unmap[c] for c in piece)
              for piece, i in tok["model"]["vocab"].items() if i not in special}
    for a in tok["added_tokens"]:
        pieces[a["id"]] = a["content"].encode()
    return Decoder(pieces, special)


def byte_level(out_dir: str) -> Decoder:
    tok = _kjv()
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    return _byte_level_pieces(tok)


def tiktoken(out_dir: str) -> Decoder:
    """Ranks = the byte-level vocabulary's ids (merge order), without its special
    token; Moonlight's description supplies <|endoftext|> = 50256 and the roles."""
    byte_level_decoder = _byte_level_pieces(_kjv())
    pieces = {i: p for i, p in byte_level_decoder.pieces.items()
              if i not in byte_level_decoder.special}
    with open(os.path.join(out_dir, "gpt2.tiktoken"), "w") as f:
        for i in sorted(pieces):
            f.write("%s %d\n" % (base64.b64encode(pieces[i]).decode(), i))
    specials = {50256: b"<|endoftext|>", 50257: b"<|system|>", 50258: b"<|user|>",
                50259: b"<|assistant|>"}
    pieces.update(specials)
    return Decoder(pieces, set(specials))


def _learn_merges(text: str, count: int) -> List[tuple]:
    """Greedy BPE over words (each "▁word"), most frequent pair first."""
    words = collections.Counter(META + w for w in text.split())
    split = {w: list(w) for w in words}
    merges = []
    for _ in range(count):
        pairs = collections.Counter()
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


def byte_fallback(out_dir: str, merges: int = 200) -> Decoder:
    vocab: Dict[str, int] = {s: i for i, s in enumerate(SSMOELM_SPECIALS)}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for c in sorted(set(TRAINING_TEXT.replace(" ", META)) | {META}):
        vocab.setdefault(c, len(vocab))
    learned = _learn_merges(TRAINING_TEXT, merges)
    for a, b in learned:
        vocab.setdefault(a + b, len(vocab))
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, s in enumerate(SSMOELM_SPECIALS)],
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
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    pieces: Dict[int, bytes] = {}
    for piece, i in vocab.items():
        if i < len(SSMOELM_SPECIALS):
            pieces[i] = piece.encode()
        elif piece.startswith("<0x") and len(piece) == 6:
            pieces[i] = bytes([int(piece[3:5], 16)])
        else:
            pieces[i] = piece.replace(META, " ").encode()
    return Decoder(pieces, set(range(len(SSMOELM_SPECIALS))))
