"""The run's tokenizer, shared by tools/sample and tools/prepare-hellaswag: prepare-data's
tokenizer.json (Hugging Face `tokenizers`) or GPT-2's ranks file through tiktoken, found in a
prepare-data output directory (its manifest.json names the file) or given as a file."""
import json
import os

from . import BadInput

EOT = "<|endoftext|>"


class RunTokenizer:
    def __init__(self, where):
        path = where
        if os.path.isdir(where):
            man = os.path.join(where, "manifest.json")
            if os.path.exists(man):
                with open(man) as f:
                    path = os.path.join(where, json.load(f)["tokenizer"]["file"])
            else:
                path = os.path.join(where, "tokenizer.json")
        if not os.path.exists(path):
            raise BadInput(f"{path}: cannot read the tokenizer (give --tokenizer)")
        if path.endswith(".tiktoken"):
            import tiktoken
            from tiktoken.load import load_tiktoken_bpe
            ranks = load_tiktoken_bpe(path)
            self.enc = tiktoken.Encoding(
                name="gpt2", pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
                mergeable_ranks=ranks, special_tokens={EOT: len(ranks)})
            self.encode, self.decode, self.eot = self.enc.encode_ordinary, self.enc.decode, self.enc.eot_token
        else:
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(path)
            self.encode = lambda s: tok.encode(s, add_special_tokens=False).ids
            self.decode = lambda ids: tok.decode(ids, skip_special_tokens=False)
            self.eot = tok.token_to_id(EOT)
        self.path = path
