// peer.mjs - What the reference tokenizers make of a corpus.
//
//   node peer.mjs hf <dir with tokenizer.json> <corpus>   Hugging Face's
//                                                          tokenizers.js
//   node peer.mjs tiktoken gpt2 <corpus>                  js-tiktoken
//   node peer.mjs ranks gpt2 <out.tiktoken>               write the ranks
//
// <corpus> holds NUL-separated texts as bytes; each is decoded as UTF-8
// with U+FFFD replacement (TextDecoder, the WHATWG rule moec follows too).
// One JSON line per text: the ids and the hex of decode(ids).
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Tiktoken } from "js-tiktoken/lite";

const [kind, source, file] = process.argv.slice(2);

// Extra special tokens beside the ranks' own (MOERT_PEER_SPECIAL, JSON):
// Moonlight's role ids.
async function tiktoken(name) {
  const ranks = (await import(`js-tiktoken/ranks/${name}`)).default;
  const extra = JSON.parse(process.env.MOERT_PEER_SPECIAL || "{}");
  return new Tiktoken(ranks, extra);
}

function records(corpus) {
  const bytes = fs.readFileSync(corpus);
  const out = [];
  let start = 0;
  for (let i = 0; i <= bytes.length; ++i) {
    if (i === bytes.length || bytes[i] === 0) {
      if (i > start || i < bytes.length) out.push(bytes.subarray(start, i));
      start = i + 1;
    }
  }
  return out;
}

const hex = (text) => Buffer.from(text, "utf8").toString("hex");
const decoder = new TextDecoder("utf-8", { fatal: false });

if (kind === "ranks") {
  // The gpt2 ranks as a .tiktoken file: "<base64 bytes> <rank>" per line.
  // js-tiktoken keeps each rank's bytes in textMap (decode() would give
  // U+FFFD for a token that is part of a character).
  const enc = await tiktoken(source);
  const lines = [];
  for (const [rank, bytes] of [...enc.textMap.entries()].sort((a, b) => a[0] - b[0])) {
    lines.push(`${Buffer.from(bytes).toString("base64")} ${rank}`);
  }
  fs.writeFileSync(file, lines.join("\n") + "\n");
  process.exit(0);
}

let encode, decode;
if (kind === "hf") {
  const json = JSON.parse(fs.readFileSync(path.join(source, "tokenizer.json")));
  const configPath = path.join(source, "tokenizer_config.json");
  const config = fs.existsSync(configPath)
    ? JSON.parse(fs.readFileSync(configPath)) : {};
  const tokenizer = new Tokenizer(json, config);
  encode = (text) => tokenizer.encode(text, { add_special_tokens: false }).ids;
  decode = (ids) => ids.length === 0 ? "" : tokenizer.decode(ids, {
    skip_special_tokens: false, clean_up_tokenization_spaces: false });
} else if (kind === "tiktoken") {
  const enc = await tiktoken(source);
  encode = (text) => enc.encode(text, "all");
  decode = (ids) => enc.decode(ids);
} else {
  console.error(`usage: node peer.mjs hf|tiktoken|ranks ...`);
  process.exit(2);
}
for (const record of records(file)) {
  const ids = encode(decoder.decode(record));
  console.log(JSON.stringify({ ids, text_hex: hex(decode(ids)) }));
}
