"""Trains the small DeepSeek-like tokenizer the deepblocks-tokenize tests run against, and records
what Python `tokenizers` and `transformers` make of it.

Run from this folder: `cd scripts/tokenizer && python3 train.py`. Writes testdata/tokenize/:
  tokenizer.json          a byte-level BPE (1024 merges-ish) with DeepSeek's pre-tokenizer chain
  tokenizer_config.json   bos/eos as DeepSeek-V2-Chat's config writes them, and its chat_template
  expected.json           ids (with and without special tokens), decodes and chat prompts

The pre-tokenizer chain is DeepSeek LLM's / DeepSeek-V2's (the regex list llama.cpp carries as
LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM, written as tokenizers `Split` steps): newlines alone; a run of
Latin/Greek/Cyrillic/... letters with an optional leading space; a run of ASCII/full-width
punctuation with an optional leading space; trailing whitespace; a run of CJK/Hangul; then digits
one by one (`Digits(individual_digits=True)`) and `ByteLevel` without its own regex. The corpus is
tinyshakespeare plus hand-written multilingual lines; the vocabulary is deliberately small, so
CJK characters and emoji are split across byte-level tokens (what the streaming decoder must
handle).
"""

import json
import os

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "testdata", "tokenize")
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
FIM = ["<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>"]

# DeepSeek-V2-Chat's tokenizer_config.json chat_template, verbatim.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Written with \u escapes where the original has a character that Unicode normalisation would
# change (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126 OHM SIGN, U+212A KELVIN SIGN).
LETTERS = (
    "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼ"
    "ℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ"
    "𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃"
)
SPLITS = [
    "[\r\n]",
    "\\s?[" + LETTERS + "]+",
    "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-퟿]+",
]

MULTILINGUAL = """\
深度求索是一家专注于人工智能基础技术研究的公司。我们今天讨论混合专家模型和多头潜在注意力。
大语言模型通过预测下一个词元来生成文本，温度越高，采样越随机。
東京で寿司を食べました。カタカナとひらがなと漢字を混ぜて書きます。
안녕하세요, 세계! 한국어 텍스트입니다. 오늘 날씨가 좋네요.
Привет, мир! Это небольшой корпус для обучения токенизатора.
Γειά σου Κόσμε! Η γλώσσα είναι ελληνική.
مرحبا بالعالم، هذا نص عربي قصير.
नमस्ते दुनिया, यह एक छोटा वाक्य है।
Emoji: 😀 😃 😄 👍 👍🏽 🇺🇸 🇨🇳 👨‍👩‍👧 ❤️ 🚀 ✨ 🎉
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2,718 1e-9 ٣٤٥ ²³
def forward(self, x):\n    return self.w2(F.silu(self.w1(x)) * self.w3(x))  # SwiGLU
for (int i = 0; i < n; ++i) { y[i] += a * x[i]; }
全角标点：！？（）【】「」…… 以及全角　空格。
"""

CASES = [
    "",
    "Hello, world! The quick brown fox jumps over 12345 lazy dogs.",
    "深度求索是一家人工智能公司。我们今天讨论混合专家模型。",
    "東京で寿司を食べました。カタカナとひらがな。",
    "안녕하세요, 세계! 한국어 텍스트입니다.",
    "Привет, мир! Γειά σου Κόσμε.",
    "مرحبا بالعالم — नमस्ते दुनिया",
    "Emoji: 😀👍🏽🇺🇸 👨‍👩‍👧 ❤️ done",
    "def f(x):\n    return x ** 2  # comment\n\n\tif x != 0: pass",
    "  leading and trailing   \n\n  ",
    "a\r\nb\rc\n",
    "！？（中文标点）…… 全角　空格 and non\u00a0breaking",
    "3.14159 1,000,000 ٣٤٥ ²³ 2024年5月",
    "Apples are りんご 林檎 and 사과. Ünïcödé façade naïve café.",
    "never-seen 龘 𠀀 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ẞ",
    BOS + "User: hi\n\nAssistant: hello" + EOS + "User: 再见\n\nAssistant:",
    "text with " + FIM[0] + " a hole",
]

CHATS = [
    ([{"role": "user", "content": "Hello!"}], True),
    (
        [
            {"role": "user", "content": "Write a haiku about tokenizers."},
            {"role": "assistant", "content": "Bytes merge into words"},
            {"role": "user", "content": "再来一首，用中文。"},
        ],
        True,
    ),
    (
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3? 🙂"},
        ],
        True,
    ),
    (
        [
            {"role": "user", "content": "Say OK."},
            {"role": "assistant", "content": "OK."},
        ],
        False,
    ),
]


def build() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in SPLITS]
        + [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1280,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with open(SHARED, encoding="utf-8") as f:
        shakespeare = f.read()
    corpus = [shakespeare[i : i + 2000] for i in range(0, len(shakespeare), 2000)]
    corpus += MULTILINGUAL.splitlines() * 20
    tok.train_from_iterator(corpus, trainer)
    # Specials after the learned vocabulary, as in DeepSeek's tokenizer (bos 100000, eos 100001).
    tok.add_special_tokens([BOS, EOS] + FIM)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)]
    )
    return tok


def added(content: str) -> dict:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    tok = build()
    path = os.path.join(OUT, "tokenizer.json")
    tok.save(path)
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": added(BOS),
        "eos_token": added(EOS),
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 16384,
        "pad_token": None,
        "sp_model_kwargs": {},
        "unk_token": None,
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(OUT, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)

    # Everything the Rust tests compare with is computed from the files just written.
    tok = Tokenizer.from_file(path)
    cases = []
    for text in CASES:
        plain = tok.encode(text, add_special_tokens=False).ids
        special = tok.encode(text, add_special_tokens=True).ids
        cases.append(
            {
                "text": text,
                "ids": plain,
                "ids_with_special": special,
                "decoded": tok.decode(plain, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(plain, skip_special_tokens=True),
            }
        )

    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=path, bos_token=BOS, eos_token=EOS)
    hf.chat_template = CHAT_TEMPLATE
    chats = []
    for messages, gen in CHATS:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        ids = tok.encode(text, add_special_tokens=False).ids
        chats.append({"messages": messages, "add_generation_prompt": gen, "text": text, "ids": ids})

    import tokenizers
    import transformers

    expected = {
        "generator": "scripts/tokenizer/train.py",
        "tokenizers": tokenizers.__version__,
        "transformers": transformers.__version__,
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "bos": [BOS, tok.token_to_id(BOS)],
        "eos": [EOS, tok.token_to_id(EOS)],
        "cases": cases,
        "chats": chats,
    }
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json", "expected.json"):
        p = os.path.join(OUT, name)
        print(f"wrote {os.path.relpath(p, ROOT)} ({os.path.getsize(p)} bytes)")
    print("vocab", expected["vocab_size"], "bos", expected["bos"], "eos", expected["eos"])
    for c in cases[:4] + cases[7:8]:
        print(repr(c["text"])[:40], len(c["ids"]), "ids")


if __name__ == "__main__":
    main()
