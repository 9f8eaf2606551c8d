"""`python -m train.translate run_dir=DIR [input=FILE] [output=FILE] [decode.beam_size=4]`

Translates (or summarizes) one text per line with a run's best checkpoint:

    echo "In the beginning God created the heaven and the earth." | python -m train.translate run_dir=DIR

Made for pipes: stdout carries the outputs and nothing else, one line per input line in
input order (an empty input line gives an empty output line); loading messages and warnings
go to stderr. Inputs longer than the model's source length are truncated with a warning.
Needs only the run directory (tokenizer.json, config, checkpoint): no corpus, no data cache.
Options: configs/translate.yaml. Decode options default to the run's own decode config.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, TextIO

from omegaconf import MISSING

from train.cli import DecodeOverrides, compose_args, decode_config, run_command
from train.errors import RunError

USAGE = ("usage: python -m train.translate run_dir=DIR [input=FILE] [output=FILE] [step=N] "
         "[decode.beam_size=4] [decode.alpha=0.6]  (reads stdin, writes stdout; see configs/translate.yaml)")
MAX_WARNINGS = 5  # truncation warnings printed one by one; the rest are counted


@dataclass
class TranslateArgs:
    """Schema of configs/translate.yaml."""

    run_dir: str = MISSING
    input: Optional[str] = None
    output: Optional[str] = None
    step: Optional[int] = None
    decode: DecodeOverrides = field(default_factory=DecodeOverrides)


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of up to `size` lines (newline removed), read lazily."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Translator:
    """Lines in, lines out, with the run's tokenizer and the shared generator."""

    def __init__(self, run, decode):
        from data.pipeline import PreparedData
        from train.evals.generation import Generator

        cfg = run.config
        self.run, self.tokenizer = run, run.tokenizer
        self.max_source_len = cfg.data.max_source_len  # in tokens, EOS included
        data = PreparedData(run.tokenizer, None, run.tokenizer.vocab_size, {}, run.run_dir)
        self.generator = Generator(run.graphdef, data, decode, cfg.data.task, cfg.data.max_source_len,
                                   cfg.data.max_target_len)
        self.lines_seen = 0
        self.truncated = 0
        self.undecodable = 0

    def translate(self, lines: list[str]) -> list[str]:
        """Outputs for `lines`, in order; blank lines stay blank and are not decoded."""
        import datasets

        from data.config import EOS_ID

        texts = [line.strip() for line in lines]
        for i, text in enumerate(texts):
            if "\ufffd" in text or "\x00" in text:  # bytes that were not UTF-8 text (a binary file?)
                self.warn_undecodable(self.lines_seen + i + 1)
                texts[i] = text.replace("\x00", " ").strip()
        todo = [i for i, t in enumerate(texts) if t]
        ids = self.tokenizer.encode([texts[i] for i in todo])
        limit = self.max_source_len - 1  # room for EOS
        for i, seq in zip(todo, ids):
            if len(seq) > limit:
                self.warn_truncated(self.lines_seen + i + 1, len(seq) + 1)
        src = [seq[:limit] + [EOS_ID] for seq in ids]
        self.lines_seen += len(lines)
        out = [""] * len(lines)
        if todo:
            dataset = datasets.Dataset.from_dict({"src_ids": src})
            for i, hyp in zip(todo, self.generator.translate(self.run.params, dataset)):
                out[i] = hyp.replace("\n", " ")  # one output line per input line
        return out

    def warn_undecodable(self, line_no: int) -> None:
        self.undecodable += 1
        if self.undecodable <= MAX_WARNINGS:
            print(f"warning: input line {line_no} is not valid UTF-8 text; its bad bytes were replaced by "
                  f"U+FFFD (convert the input to UTF-8, e.g. with iconv, for a faithful translation).",
                  file=sys.stderr)

    def warn_truncated(self, line_no: int, n_tokens: int) -> None:
        self.truncated += 1
        if self.truncated <= MAX_WARNINGS:
            print(f"warning: input line {line_no} has {n_tokens} tokens; the model reads at most "
                  f"{self.max_source_len} (data.max_source_len of the run), so it was truncated.",
                  file=sys.stderr)


def open_input(path: Optional[str]) -> TextIO:
    if path is None:
        # UTF-8 whatever the locale; undecodable bytes become U+FFFD instead of a crash.
        if isinstance(sys.stdin, io.TextIOWrapper):  # not when embedded (pytest's stdin, notebooks)
            sys.stdin.reconfigure(encoding="utf-8", errors="replace")
        return sys.stdin
    try:
        return open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        raise RunError(f"cannot read input={path}: {e.strerror}.") from None


def open_output(path: Optional[str], stdout: TextIO) -> TextIO:
    if path is None:
        if isinstance(stdout, io.TextIOWrapper):
            stdout.reconfigure(encoding="utf-8")  # whatever the locale says
        return stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as e:
        raise RunError(f"cannot write output={path}: {e.strerror}.") from None


def translate(args, stdout: TextIO) -> int:
    """Translate every input line; return how many lines were written."""
    from train.engine.runtime import enable_compilation_cache, quiet_library_logs
    from train.runs import load_run

    quiet_library_logs(logging.ERROR)
    source = open_input(args.input)  # a missing input file is reported before the model loads
    run = load_run(args.run_dir, step=args.step)
    decode = decode_config(run.config.decode, args.decode)
    enable_compilation_cache(run.config.train.compilation_cache)
    translator = Translator(run, decode)
    # On a terminal, answer each line as it is typed; otherwise read a batch at a time.
    size = 1 if args.input is None and sys.stdin.isatty() else decode.batch_size
    sink = open_output(args.output, stdout)
    written = 0
    try:
        for chunk in chunks(source, size):
            for line in translator.translate(chunk):
                sink.write(line + "\n")
            sink.flush()  # a reader at the other end of the pipe sees each batch as it is done
            written += len(chunk)
    finally:
        sink.flush()
        if args.output is not None:
            sink.close()
        if args.input is not None:
            source.close()
    if translator.truncated > MAX_WARNINGS:
        print(f"warning: {translator.truncated} input lines in all were truncated.", file=sys.stderr)
    print(f"translated {written} lines", file=sys.stderr)
    return written


def main(argv: Optional[list[str]] = None) -> None:
    args = compose_args("translate", TranslateArgs, sys.argv[1:] if argv is None else argv, USAGE)
    # Anything a library prints goes to stderr: stdout carries the translations only.
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        run_command(lambda a: translate(a, stdout), args)
    except BrokenPipeError:  # `... | head`: the reader left. Exit like a Unix tool killed by SIGPIPE,
        # with stdout pointed at /dev/null so that the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        sys.exit(141)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    main()
