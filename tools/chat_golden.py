"""Golden chat-template renderings from HF transformers, for tests/chat_template.rs.

For each tokenizer folder under tests/tokenizers/ (tools/fetch_tokenizers.sh) and each
conversation of tests/chat/conversations.json: the text of
`apply_chat_template(messages, tokenize=False, add_generation_prompt=..., **kwargs)` and its
token ids (`tokenize=True`). Writes tests/chat/golden.json. Runs where transformers is
installed (the GPU machine):

    python3 tools/chat_golden.py [--out tests/chat/golden.json]
"""
import argparse
import json
import pathlib

import transformers
from transformers import AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "tests/chat/golden.json"))
    args = ap.parse_args()
    conversations = json.loads((ROOT / "tests/chat/conversations.json").read_text())
    golden = {"transformers": transformers.__version__, "models": {}}
    for folder in sorted((ROOT / "tests/tokenizers").iterdir()):
        tok = AutoTokenizer.from_pretrained(str(folder))
        rows = []
        for conv in conversations:
            kw = dict(add_generation_prompt=conv["add_generation_prompt"], **conv.get("kwargs", {}))
            text = tok.apply_chat_template(conv["messages"], tokenize=False, **kw)
            ids = tok.apply_chat_template(conv["messages"], tokenize=True, **kw)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            rows.append({"text": text, "ids": list(map(int, ids))})
        golden["models"][folder.name] = rows
        print(folder.name, [len(r["ids"]) for r in rows])
    pathlib.Path(args.out).write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
