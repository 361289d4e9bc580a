"""The texts every tokenizer is checked on (differential_test.py).

Varied on purpose: English prose, code, numbers, whitespace runs, emoji
(including ZWJ sequences and skin tones), CJK and other scripts, the
contractions the GPT-2 regex treats specially, special-token strings, long
runs that stress BPE, and bytes that are not UTF-8 (each maximal invalid
subpart becomes U+FFFD before tokenizing, in moec as in the peers).
"""

ENGLISH = [
    "Once upon a time, there was a little girl who lived in a village near the forest.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "In the beginning God created the heaven and the earth.\n\nAnd the earth was without form, and void.",
    "It's, I'm, you're, we've, they'll, she'd, DON'T, Isn't it? 'quoted' \"double\" rock'n'roll ''s",
    "Mixture-of-Experts models route each token to a few experts; the rest stay idle.",
    "Hello",
    " leading space",
    "trailing space ",
    "",
]

CODE = [
    "int main(int argc, char **argv) {\n  for (int i = 0; i < argc; ++i) {\n    printf(\"%s\\n\", argv[i]);\n  }\n  return 0;\n}\n",
    "def softmax(x):\n    e = np.exp(x - x.max(axis=-1, keepdims=True))\n    return e / e.sum(-1, keepdims=True)\n",
    "<html><body class=\"main\">&nbsp;&lt;tag&gt;</body></html>",
    "SELECT name, COUNT(*) FROM users WHERE age >= 21 GROUP BY name;",
    "x+=1;y-=2;z*=3;a/=4;b%=5;c<<=6;d>>=7;e&&f||!g",
]

NUMBERS = [
    "3.14159265358979 2.718281828 1,000,000 1e-9 -42 +7 0x1F 0b1010 007",
    "2024-11-23T21:37:20Z 12:34:56.789 +1 (555) 123-4567",
    "1234567890" * 12,
    "Version 1.2.3-rc.4+build.5 costs $19.99 (15% off) or \u20ac17,50",
]

WHITESPACE = [
    "a  b   c    d     e",
    "\t\ttabs\tand\n\n\nnewlines\r\n\r\nCRLF",
    "   \n   \n\t  x",
    "word" + " " * 37 + "word",
    "\u00a0no-break\u3000ideographic\u2003em space\u2009thin",
    " " * 200,
    "\n" * 50 + "end",
]

SCRIPTS = [
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3068\u6f22\u5b57\u3001\u30ab\u30bf\u30ab\u30ca\u3082\u3002",
    "\u4e2d\u6587\u5206\u8bcd\u6d4b\u8bd5\uff1a\u6df7\u5408\u4e13\u5bb6\u6a21\u578b\u3002",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4.",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",
    "na\u00efve caf\u00e9 \u00fcber \u00c5ngstr\u00f6m e\u0301 (combining)",
    "\u2460\u2461\u2462 \u00bd \u2153 \u0663\u0664 \u0e51\u0e52 (numbers in other scripts)",
]

EMOJI = [
    "\U0001F600 \U0001F389\U0001F38A \u2764\ufe0f \U0001F44D\U0001F3FD",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 family, \U0001F3F3\ufe0f\u200d\U0001F308 flag",
    "emoji\U0001F680in\U0001F30Dthe\U0001F525middle",
    "\U0001F1EF\U0001F1F5\U0001F1FA\U0001F1F8 flags",
]

SPECIAL = [
    "text <|endoftext|> more text",
    "<|endoftext|><|endoftext|>",
    "<s> and </s> and <unk> written out",
    "<|user|> role markers <|assistant|> <|system|>",
]

STRESS = [
    "a" * 3000,
    "ab" * 1500,
    "!" * 500 + "?" * 500,
    "supercalifragilisticexpialidocious" * 40,
]

INVALID_UTF8 = [
    b"\xff\xfe lone bytes",
    b"truncated \xe6\x97 end",
    b"overlong \xc0\xaf and surrogate \xed\xa0\x80",
    b"\xf0\x9f\x98",
    b"ok \x80\x80\x80 continuation bytes",
    b"\xf4\x90\x80\x80 past U+10FFFF",
]


def records():
    """Every text of the corpus, as bytes."""
    out = []
    for group in (ENGLISH, CODE, NUMBERS, WHITESPACE, SCRIPTS, EMOJI, SPECIAL, STRESS):
        out.extend(text.encode("utf-8") for text in group)
    out.extend(INVALID_UTF8)
    return out
