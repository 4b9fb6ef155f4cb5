"""The block logged before training (`run_summary`): what is about to run, in the user's terms. Its parts are
small pure functions: what each phase trains (`phase_lines`), the augmentation (`augmentation_words`), the class
weights (`class_weight_words`) and the class histogram."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from torch.utils.data import Dataset as Sized

from tunecv.config import Config, DataConfig, LoaderConfig
from tunecv.finetune.phases import Phase
from tunecv.models.layer_map import LayerMap
from tunecv.optim.schedulers import build_schedule

INDENT = " " * 13  # continuation lines line up under the values


def count_words(count: int) -> str:
    """2,562 below a million; 3.37 M above."""
    return f"{count:,}" if count < 1_000_000 else f"{count / 1e6:.3g} M"


def share_words(part: int, whole: int) -> str:
    """"2,562 of 3.37 M"; exact counts when rounding would hide that the part is smaller."""
    part_words, whole_words = count_words(part), count_words(whole)
    if part != whole and part_words == whole_words:
        part_words, whole_words = f"{part:,}", f"{whole:,}"
    return f"{part_words} of {whole_words}"


def trained_part(trainable: set[str], lmap: LayerMap) -> tuple[str, str]:
    """(kind, what trains) of a phase whose trainable parameters are `trainable`: ("full", ""), ("linear probe",
    "the head"), ("head group", "the head and conv_head, bn2") or ("partial", "the top 2 of 8 stages and the
    head"); stages count from the stem, the head group apart."""
    names, classifier, head_group = set(lmap.names), set(lmap.classifier), set(lmap.stages[-1])
    if names <= trainable:
        return "full", ""
    if trainable <= classifier:
        return "linear probe", "the head"
    if trainable <= head_group:
        modules = list(dict.fromkeys(name.split(".")[0] for name in lmap.stages[-1]
                                     if name in trainable and name not in classifier))
        return "head group", "the head and " + ", ".join(modules) if trainable & classifier else ", ".join(modules)
    body = lmap.stages[:-1]
    touched = [i for i, stage in enumerate(body) if trainable & set(stage)]
    in_part = sum(not set(body[i]) <= trainable for i in touched)
    if not in_part and touched == list(range(len(body) - len(touched), len(body))):
        what = f"the top {len(touched)} of {len(body)} stages"
    else:
        what = f"{len(touched)} of {len(body)} stages" + (f" ({in_part} in part)" if in_part else "")
    return "partial", what + (" and the head" if trainable & classifier else "")


def phase_lines(sizes: dict[str, int], lmap: LayerMap, phases: Sequence[Phase]) -> list[str]:
    """What trains in each phase, in words and numbers: "linear probe: 2,562 of 3.37 M parameters train (the
    head)"; prefixed by the phase's epochs when there are several. `sizes`: elements per parameter name."""
    total = sum(sizes.values())
    lines = []
    for phase in phases:
        trainable = {name for name in sizes if name not in phase.frozen}
        kind, what = trained_part(trainable, lmap)
        line = f"{kind}: {share_words(sum(sizes[name] for name in trainable), total)} parameters train"
        line += f" ({what})" if what else ""
        if len(phases) > 1:
            epochs = f"epoch {phase.start}" if phase.start == phase.end else f"epochs {phase.start}-{phase.end}"
            line = f"{epochs} {line}"
        lines.append(line)
    return lines


def policy_words(policy: str) -> str:
    """timm's policy families, by the prefix its create_transform dispatches on."""
    family = "RandAugment" if policy.startswith("rand") else "AugMix" if policy.startswith("augmix") \
        else "AutoAugment"
    return f"{family} {policy}"


def augmentation_words(data: DataConfig, loader: LoaderConfig) -> str:
    """The training augmentation that runs, as timm's create_transform builds it from these keys, and the batch
    mixing; "none" when there is none."""
    flips = [f"{name} {p:g}" for name, p in (("hflip", data.hflip), ("vflip", data.vflip)) if p > 0]
    if data.no_aug:
        parts = [f"evaluation crop + {' + '.join(flips)} (no_aug)"] if flips else []
    else:
        parts = [f"random-resized crop (scale {data.scale[0]:g}-{data.scale[1]:g}, ratio {data.ratio[0]:.3g}-"
                 f"{data.ratio[1]:.3g})", *flips]
        # timm turns colour jitter off under an auto-augment policy, but for its 3a policy
        jitter_off = bool(data.auto_augment) and "3a" not in data.auto_augment
        if data.color_jitter and any(data.color_jitter) and not jitter_off:
            parts.append(f"colour jitter {', '.join(f'{v:g}' for v in data.color_jitter)}")
        if data.auto_augment:
            parts.append(policy_words(data.auto_augment))
        if data.re_prob > 0:
            parts.append(f"random erasing p={data.re_prob:g}" + (" (noise)" if data.re_value == "random" else ""))
    mixing = [f"{name} alpha {alpha:g}" for name, alpha in (("mixup", loader.mixup), ("cutmix", loader.cutmix))
              if alpha > 0]
    if mixing:
        parts.append(" / ".join(mixing) + (f" on {loader.cutmix_prob:.0%} of batches" if loader.cutmix_prob < 1
                                           else ""))
    return ", ".join(parts) or "none"


def class_weight_words(classes: Sequence[str], weights: Sequence[float], listed: int = 8) -> str:
    """The loss's class weights: each class's up to `listed` classes, else the range and its classes."""
    if len(classes) <= listed:
        return ", ".join(f"{name} {weight:.3g}" for name, weight in zip(classes, weights))
    low = min(range(len(weights)), key=weights.__getitem__)
    high = max(range(len(weights)), key=weights.__getitem__)
    return f"{weights[low]:.3g} ({classes[low]}) to {weights[high]:.3g} ({classes[high]})"


def warmup_words(cfg: Config, steps_per_epoch: int) -> str:
    """The warm-up the schedule runs: a run shorter than the warm-up asked for warms up all the way."""
    schedule = build_schedule(cfg.sched, cfg.optim.lr, steps_per_epoch, cfg.train.epoch_size)
    sched = cfg.sched
    asked = sched.warmup_iters if sched.warmup_iters is not None else round(sched.warmup_epochs * steps_per_epoch)
    if asked > schedule.warmup_steps:
        return f"warm-up the whole run ({schedule.warmup_steps} steps; {asked} were asked for)"
    return f"warm-up {sched.warmup_iters} steps" if sched.warmup_iters is not None else \
        f"warm-up {sched.warmup_epochs:g} epochs"


def run_summary(cfg: Config, train_set: Sized, val_set: Sized | None, weights: str, trains: list[str],
                optimizer_name: str, group_table: str, steps_per_epoch: int, workers: int, compute: str,
                caches: str = "none", class_weights: list[float] | None = None) -> str:
    """The one block logged before training. `trains`: `phase_lines`; `group_table`: the first phase's parameter
    groups; `class_weights`: the loss's, when it weighs classes."""
    classes = train_set.classes
    data, sched, train = cfg.data, cfg.sched, cfg.train
    weighting = f", inverse-frequency class weights ({class_weight_words(classes, class_weights)})" \
        if class_weights else ""
    return "\n".join([
        "tunecv run",
        f"  data       {data.dataset}{' ' + data.data_dir if data.data_dir else ''}: train {len(train_set)} images,"
        f" val {len(val_set) if val_set is not None else 'none'}",
        f"  classes    {len(classes)} (images per class: train / val)",
        class_histogram(classes, train_set.targets, val_set.targets if val_set is not None else None),
        f"  model      {cfg.model.model}, weights: {weights}",
        f"  trains     {trains[0]}", *(INDENT + line for line in trains[1:]),
        group_table,
        f"  input      {data.image_resize} px, {data.interpolation}, crop_pct {data.crop_pct},"
        f" mean {list(data.mean)} std {list(data.std)}",
        f"  augment    {augmentation_words(data, cfg.loader)}",
        f"  optimizer  {optimizer_name} ({cfg.optim.opt}) lr {cfg.optim.lr:g}"
        f" weight_decay {cfg.optim.weight_decay:g}",
        f"  schedule   {sched.scheduler}, {warmup_words(cfg, steps_per_epoch)}, {train.epoch_size} epochs"
        f" x {steps_per_epoch} steps, batch {cfg.loader.batch_size}"
        + (f" x {train.gradient_accumulation_steps} accumulated" if train.gradient_accumulation_steps > 1 else ""),
        f"  loss       {train.loss}, label_smoothing {train.label_smoothing:g}{weighting}"
        + (f", auxiliary heads x {cfg.model.aux_factor:g}" if cfg.model.aux_factor > 0 else "")
        + (", balanced sampler" if cfg.loader.sampler == "balanced" else "")
        + (f", EMA {train.ema_decay:g}" if train.ema else ""),
        f"  device     {compute}; {workers} loader workers",
        f"  caches     {caches}",
        f"  output     {train.ckpt_save_dir}",
    ])


def class_histogram(classes: list[str], train_targets: list[int], val_targets: list[int] | None,
                    max_rows: int = 12, width: int = 24) -> str:
    """Indented rows `name  train  val  ####`; past `max_rows` classes, the smallest and largest few."""
    train_counts, val_counts = Counter(train_targets), Counter(val_targets or [])
    order = sorted(range(len(classes)), key=lambda c: (-train_counts[c], classes[c]))
    if len(order) > max_rows:
        order = order[:max_rows // 2] + [-1] + order[-(max_rows // 2):]
    peak = max(train_counts.values(), default=1)
    name_width = max(len(classes[c]) for c in order if c >= 0)
    rows = []
    for c in order:
        if c < 0:
            rows.append(f"{INDENT}{'...':<{name_width}}")
            continue
        bar = "#" * max(1, round(width * train_counts[c] / peak))
        val = str(val_counts[c]) if val_targets is not None else "-"
        rows.append(f"{INDENT}{classes[c]:<{name_width}}  {train_counts[c]:>6} / {val:>5}  {bar}")
    return "\n".join(rows)
