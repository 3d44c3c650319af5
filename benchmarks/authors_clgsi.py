"""Time training steps of the authors' CLGSI code on a file msakit reads (BENCHMARKS.md).

Usage (the authors' code is not part of msakit; clone it first):

    git clone https://github.com/AZYoung233/CLGSI /tmp/clgsi-authors
    PYTHONPATH=src python benchmarks/authors_clgsi.py /tmp/clgsi-authors mosi.npz \
        --dataset mosi --steps 5 --json

It imports the authors' modules from that checkout and runs them unchanged: their ``AMIO``
model built from their ``ConfigRegression`` for the data set, their ``l1_loss`` and
``contrastive_loss``, AdamW with their five parameter groups and learning rates, one optimizer
step per batch as their ``do_train`` does with ``update_epochs=1``. Two changes, both shims
around their code: their ``BertTextEncoder`` loads the text encoder named by ``--text-encoder``
(default: msakit's packaged MiniLM, so the text width of their configuration becomes its 384)
instead of downloading bert-base-uncased, and their ``MMDataset`` reads a temporary pickle
written from the file given (msakit's npz or an MMSA pickle), holding the train samples the
timed steps use. Their batches are padded to the file's full lengths whatever samples they hold,
so their step cost does not depend on which samples a batch draws.

Prints samples/s, the median step time, process CPU seconds per sample and the peak RSS, like
``msakit bench`` (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _shim_text_encoder(bert_module, encoder: str) -> None:
    """Their BertTextEncoder calls Auto{Tokenizer,Model}.from_pretrained('bert-base-...')."""
    from msakit.encoders.text import load_text_encoder

    class Model:
        @staticmethod
        def from_pretrained(name, **kwargs):
            return load_text_encoder(encoder)

    class NoTokenizer:  # their forward never tokenizes: the file holds token ids
        @staticmethod
        def from_pretrained(name, **kwargs):
            return None

    bert_module.AutoModel = Model
    bert_module.AutoTokenizer = NoTokenizer


def _write_pickle(data: str, samples: int, out: Path, split_name: str = "train") -> None:
    """The first ``samples`` samples of ``data``'s split ``split_name`` as an MMSA pickle (the
    same samples in all three splits)."""
    from msakit.data.mmsa import load_feature_file

    split = load_feature_file(data).splits[split_name]
    n = min(samples, len(split))
    part = {
        "text_bert": np.asarray(split.text_bert[:n], dtype=np.float32),
        "audio": np.asarray(split.audio[:n]),
        "vision": np.asarray(split.vision[:n]),
        "audio_lengths": np.asarray(split.audio_lengths[:n]),
        "vision_lengths": np.asarray(split.vision_lengths[:n]),
        "regression_labels": np.asarray(split.labels[:n]),
        "id": np.array([f"s{i}" for i in range(n)], dtype=object),
        "raw_text": np.array([""] * n, dtype=object),
    }
    with open(out, "wb") as f:
        pickle.dump({"train": part, "valid": part, "test": part}, f)


def _optimizer(model, args) -> torch.optim.Optimizer:
    """AdamW with their parameter groups (do_train): BERT with/without decay, audio, video,
    other, each with their learning rate and weight decay."""
    no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
    inner = model.Model
    bert = list(inner.text_model.named_parameters())
    other = [p for n, p in inner.named_parameters()
             if "text_model" not in n and "audio_model" not in n and "video_model" not in n]
    return torch.optim.AdamW([
        {"params": [p for n, p in bert if not any(k in n for k in no_decay)],
         "weight_decay": args.weight_decay_bert, "lr": args.learning_rate_bert},
        {"params": [p for n, p in bert if any(k in n for k in no_decay)],
         "weight_decay": 0.0, "lr": args.learning_rate_bert},
        {"params": list(inner.audio_model.parameters()),
         "weight_decay": args.weight_decay_audio, "lr": args.learning_rate_audio},
        {"params": list(inner.video_model.parameters()),
         "weight_decay": args.weight_decay_video, "lr": args.learning_rate_video},
        {"params": other, "weight_decay": args.weight_decay_other,
         "lr": args.learning_rate_other},
    ])


def _build(root: Path, cli: argparse.Namespace, pkl: Path):
    """Their model, trainer, configuration and train batches (padded, shuffled)."""
    sys.path.insert(0, str(root))
    from config.config_regression import ConfigRegression
    from data.load_data import MMDataset
    from models import AMIO as amio_module
    from models.subNets import BertTextEncoder as bert_module
    from trains.multiTask.CLGSI import CLGSI as CLGSITrainer

    _shim_text_encoder(bert_module, cli.text_encoder)
    args = ConfigRegression(argparse.Namespace(
        modelName="clgsi", datasetName=cli.dataset, train_mode="regression")).get_config()
    args.dataPath, args.device = str(pkl), torch.device("cpu")
    train = MMDataset(args, mode="train")
    args.seq_lens = train.get_seq_len()
    width = int(bert_module.AutoModel.from_pretrained("").config.hidden_size)
    args.feature_dims = (width, *train.get_feature_dim()[1:])
    args.text_out = width
    args.train_samples = len(train)
    torch.manual_seed(cli.seed)
    model = amio_module.AMIO(args)
    loader = torch.utils.data.DataLoader(train, batch_size=cli.batch or args.batch_size,
                                         shuffle=True, drop_last=True)
    return model, CLGSITrainer(args), args, loader


def _step(model, trainer, args, batch, *, optimizer) -> None:
    from models.contrastive_loss import contrastive_loss

    indexes = batch["index"].view(-1)
    trainer.init_labels(indexes, batch["labels"]["M"].view(-1))
    optimizer.zero_grad()
    outputs = model(batch["text"], (batch["audio"], batch["audio_lengths"]),
                    (batch["vision"], batch["vision_lengths"]))
    labels = trainer.label_map["fusion"][indexes]
    loss = trainer.l1_loss(outputs["M"], labels, indexes=indexes, mode="fusion")
    loss = loss + args.gamma * contrastive_loss(
        args.datasetName, args.device, args.dividing_line)(outputs, labels)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("authors_dir")
    parser.add_argument("data")
    parser.add_argument("--dataset", default="mosi", choices=["mosi", "mosei", "sims"])
    parser.add_argument("--batch", type=int, help="default: their configuration's")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--text-encoder", default="minilm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    cli = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkl = Path(tmp) / "train.pkl"
        _write_pickle(cli.data, (cli.steps + cli.warmup_steps) * (cli.batch or 128), pkl)
        model, trainer, args, loader = _build(Path(cli.authors_dir).resolve(), cli, pkl)
    model.train()
    optimizer = _optimizer(model, args)
    batches = iter(loader)
    for _ in range(cli.warmup_steps):
        _step(model, trainer, args, next(batches), optimizer=optimizer)
    seconds, samples = [], 0
    cpu = time.process_time()
    for _ in range(cli.steps):
        batch = next(batches)
        start = time.perf_counter()
        _step(model, trainer, args, batch, optimizer=optimizer)
        seconds.append(time.perf_counter() - start)
        samples += len(batch["index"])
    cpu = time.process_time() - cpu
    result = {
        "code": "authors", "dataset": cli.dataset, "batch": loader.batch_size,
        "steps": cli.steps, "samples_per_s": round(samples / sum(seconds), 3),
        "median_step_s": round(statistics.median(seconds), 4),
        "cpu_s_per_sample": round(cpu / samples, 5),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result) if cli.json else "\n".join(f"{k}  {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
