"""Config schema: every key, its default, help and choices, in one frozen dataclass per pipeline section.

Pure data: `tunecv.config` reads, merges, types and resolves; `tunecv.cli` turns each key into a flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tunecv.config.registries import LAYOUTS, OPTIMIZERS, SCHEDULERS, TASKS, TORCHVISION_DATASETS


def _key(default: Any, help: str, choices: tuple[str, ...] = (), literals: tuple[str, ...] = ()) -> Any:
    """`choices`: the only values allowed; `literals`: words accepted besides the key's type (`lr: auto`)."""
    return field(default=default, metadata={"help": help, "choices": choices, "literals": literals})


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _key("auto", "data layout, auto-detected in data_dir, or a torchvision dataset (docs/data.md)",
                        (*LAYOUTS, *TORCHVISION_DATASETS))
    data_dir: str | None = _key(None, "dataset root: split folders, class folders, list/CSV files or FGVC-Aircraft")
    train_split: str = _key("train", "train split folder name")
    val_split: str = _key("val", "validation split folder name")
    train_list: str | None = _key(None, "list file (`path label` lines) or CSV of the training images")
    val_list: str | None = _key(None, "list file or CSV of the validation images")
    image_root: str | None = _key(None, "folder the list/CSV paths are relative to (default: data_dir)")
    class_list: str | None = _key(None, "class names, `<index> <name>` per line (PaddleClas label_list.txt)")
    path_column: str = _key("path", "CSV column holding the image path")
    label_column: str = _key("label", "CSV column holding the label (index or class name)")
    annotation_level: str = _key("variant", "FGVC-Aircraft label level", ("variant", "family", "manufacturer"))
    jpeg_draft: bool = _key(True, "decode large JPEGs at a reduced scale that still covers the input size")
    on_bad_image: str = _key("skip", "unreadable images: skip them (warned, listed in bad_images.txt) or error",
                             ("skip", "error"))
    val_fraction: float = _key(0.2, "single_folder: seeded, stratified share of each class held out for val")
    dataset_download: bool = _key(False, "download a torchvision dataset into data_dir (folders and digits need none)")
    cache_images: str = _key("auto", "decode + resize each image once and keep the uint8 pixels: ram, disk "
                                     "(memory-mapped in cache_dir, reused by the next run), none; auto: ram within "
                                     "cache_ram_gb, else disk within half the free space",
                             ("auto", "ram", "disk", "none"))
    cache_dir: str | None = _key(None, "where disk image caches live (default: ckpt_save_dir/cache)")
    cache_ram_gb: float | None = _key(None, "RAM budget of cache_images: auto (default: a quarter of the free memory)")
    image_resize: int = _key(224, "training crop / evaluation input size in pixels; left at 224, a model that takes "
                                  "one size only (crossvit: 240) gets its own")
    scale: tuple[float, ...] = _key((0.08, 1.0), "RandomResizedCrop area range")
    ratio: tuple[float, ...] = _key((0.75, 1.333), "RandomResizedCrop aspect-ratio range")
    no_aug: bool = _key(False, "timm --no-aug: training images get the evaluation resize + centre crop, and "
                               "the flips only (scale, ratio, colour jitter unused); lets cache_features: auto cache")
    hflip: float = _key(0.5, "horizontal flip probability")
    vflip: float = _key(0.0, "vertical flip probability")
    color_jitter: tuple[float, ...] | None = _key((0.4,), "colour jitter: one strength, or brightness, contrast, "
                                                  "saturation[, hue] (null: off)")
    interpolation: str | None = _key(None, "resize interpolation (default: the model's)",
                                     ("bilinear", "bicubic", "nearest", "random"))
    auto_augment: str | None = _key(None, "timm or MindCV policy: rand-m7-mstd0.5 (MindCV randaug-m7-mstd0.5), "
                                          "original (MindCV autoaug), augmix-m5, v0, 3a")
    re_prob: float = _key(0.0, "random erasing probability")
    re_value: str = _key("0", "random erasing fill: 0 (zeros) or random (per-pixel noise)", ("0", "random"))
    re_scale: tuple[float, ...] = _key((0.02, 1 / 3), "random erasing: the erased area's range, as a fraction of the "
                                                        "image (MindCV's re_scale, timm's min_area/max_area)")
    re_ratio: tuple[float, ...] = _key((0.3, 3.3), "random erasing: the erased box's aspect-ratio range (MindCV's "
                                                     "re_ratio, timm's min_aspect/max_aspect)")
    re_max_attempts: int = _key(10, "random erasing: boxes drawn until one fits inside the image (MindCV's "
                                    "re_max_attempts; timm's 10)")
    mean: tuple[float, ...] | None = _key(None, "normalisation mean (default: the model's; 0-255 scale accepted)")
    std: tuple[float, ...] | None = _key(None, "normalisation std (default: the model's; 0-255 scale accepted)")
    crop_pct: float | None = _key(None, "evaluation: resize to image_resize / crop_pct, centre-crop image_resize "
                                        "(default: the model's); above 1 (MindCV): the shorter side shrunk inside a "
                                        "black border")


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = _key(32, "images per step")
    num_parallel_workers: int = _key(8, "DataLoader workers per process (capped at its share of the cores)")
    shuffle: bool = _key(True, "shuffle the training set each epoch")
    drop_remainder: bool = _key(False, "drop the last incomplete training batch (a batch of 1 is always dropped)")
    mixup: float = _key(0.0, "mixup alpha (0: off)")
    cutmix: float = _key(0.0, "cutmix alpha (0: off)")
    cutmix_prob: float = _key(1.0, "probability of applying mixup/cutmix to a batch")
    sampler: str = _key("none", "balanced: draw training images with probability 1/class size (with replacement)",
                        ("none", "balanced"))
    aug_repeats: int = _key(0, "repeated augmentation (DeiT, MindCV): an epoch draws 1/N of the training images, each "
                               "N times under its own augmentation, the copies on different ranks; 0 or 1: off")


@dataclass(frozen=True)
class ModelConfig:
    task: str = _key("classification", "classification, or detection: a torchvision detector on COCO-format data "
                                       "(see docs/detection.md)", TASKS)
    model: str = _key("tf_efficientnet_lite0", "timm, MindCV or torchvision model name (detection: a detector name)")
    num_classes: int | None = _key(None, "classes (default: inferred from the data)")
    in_channels: int = _key(3, "input channels")
    drop_rate: float | None = _key(None, "dropout before the classifier")
    drop_path_rate: float | None = _key(None, "stochastic depth rate")
    aux_factor: float = _key(0.0, "weight of each auxiliary classifier's loss (inception_v3, googlenet; MindCV's "
                                  "aux_factor); 0: the model is built without them")
    pretrained: bool = _key(False, "start from ImageNet weights (bundled offline for tf_efficientnet_lite0/1/2)")
    ckpt_path: str | None = _key(None, "initialise from this local checkpoint (.pth/.pt/.ckpt/.safetensors)")
    ckpt_prefix: str | None = _key(None, "load only the keys under this prefix, e.g. backbone.")


@dataclass(frozen=True)
class OptimConfig:
    opt: str = _key("adamw", "optimizer: MindCV's names (sgd/momentum: SGD with momentum, Nesterov by use_nesterov) "
                             "and every one timm's create_optimizer_v2 builds (bnb*, fused*: CUDA only)",
                    tuple(OPTIMIZERS))
    lr: float = _key(0.001, "peak learning rate; auto: run the LR range test first and train with its suggestion",
                     literals=("auto",))
    momentum: float = _key(0.9, "momentum (sgd/momentum/rmsprop)")
    weight_decay: float = _key(1e-4, "weight decay")
    use_nesterov: bool = _key(False, "Nesterov momentum (sgd/momentum)")
    weight_decay_filter: str = _key("auto", "auto/norm_and_bias: no decay on norm and bias; disable: decay all",
                                    ("auto", "norm_and_bias", "disable"))
    eps: float | None = _key(None, "optimizer epsilon (default: the optimizer's)")
    auto_scale_lr: dict[str, Any] | None = _key(None, "MMPretrain: {base_batch_size: 256} scales lr by "
                                                       "batch_size x accumulation x GPUs / base_batch_size")


@dataclass(frozen=True)
class FinetuneConfig:
    strategy: str = _key("full", "full | linear_probe | freeze:N (stem + N stages) | lp_ft (head first, then all) | "
                                 "gradual (unfreeze top-down) | auto (measured on a held-out slice of train: the "
                                 "probe, a partial fine-tune, lp_ft or full; see docs/strategies.md); the keys below "
                                 "refine or override it")
    freeze: str = _key("none", "all: train only the new classifier; head_only: the model's whole head group "
                               "(e.g. conv_head + classifier)", ("none", "all", "head_only"))
    frozen_stages: int = _key(-1, "MMPretrain: freeze the stem and the first N stages (-1: none; timm stage map)")
    freeze_layers: int = _key(0, "freeze the first N layers of the model's layer order (stem = 1 layer)")
    freeze_patterns: tuple[str, ...] = _key((), "freeze parameters by name: module prefix, glob (blocks.1*) or "
                                                "re:regex; MindCV features.N accepted for mobilenet_v3")
    unfreeze_patterns: tuple[str, ...] = _key((), "unfreeze these again (applied after the freeze keys)")
    freeze_bn: bool = _key(True, "keep BatchNorm of frozen parts in eval mode (running statistics untouched); "
                                 "detection: the backbone's BatchNorm is frozen whenever weights are loaded")
    lr_scales: dict[str, float] | None = _key(None, "{pattern: lr multiplier}, first match wins, e.g. "
                                                    "{classifier: 1.2, blocks.6: 1.1}")
    paramwise_cfg: dict[str, Any] | None = _key(None, "MMPretrain: {custom_keys: {name: {lr_mult, decay_mult}}, "
                                                      "norm_decay_mult, bias_decay_mult}")
    head_lr_scale: float = _key(1.0, "lr multiplier of the new classifier")
    layer_decay: float | None = _key(None, "timm layer-wise lr decay: layer i of L gets lr x layer_decay^(L-1-i)")
    freeze_epochs: int = _key(0, "fastai fine_tune: train the classifier alone for N epochs, then everything")
    unfreeze_lr_scale: float = _key(1.0, "after unfreezing, the first layer's lr relative to the head's "
                                         "(geometric in between: fastai's slice(lr*s, lr))")
    unfreeze_head_lr_scale: float = _key(1.0, "after unfreezing, the head's lr relative to lr, and with it every "
                                              "layer's (fastai fine_tune halves it)")
    unfreeze_bn: str = _key("train", "BatchNorm of the layers that unfreeze during the run: train: normalise by "
                                     "each batch and update the running statistics; eval: keep the pretrained "
                                     "statistics all run (its weight and bias still train)", ("train", "eval"))
    unfreeze_schedule: dict[int, tuple[str, ...]] | None = _key(None, "gradual unfreezing: {epoch: [patterns]}; "
                                                                      "starts from the classifier alone")
    cache_features: str = _key("auto", "train the classifier on the frozen backbone's outputs, computed once: "
                                       "auto when all below the classifier is frozen for the whole run and the "
                                       "training transform is no_aug; true also with random augmentation "
                                       "(feature_views views); false: never", ("auto", "true", "false"))
    feature_views: int = _key(0, "cache_features: true with random augmentation: augmented views of each training "
                                 "image computed once; epoch e trains on view e mod N")
    lr_find_steps: int = _key(100, "steps of the LR range test (--lr_find, lr: auto)")


@dataclass(frozen=True)
class SchedConfig:
    scheduler: str = _key("cosine_decay", "learning-rate schedule", SCHEDULERS)
    min_lr: float = _key(1e-6, "floor of cosine/polynomial decay")
    warmup_epochs: float = _key(0.0, "linear warm-up length in epochs")
    warmup_factor: float = _key(0.0, "warm-up starts at lr * warmup_factor (MMDetection: warmup_ratio)")
    warmup_iters: int | None = _key(None, "linear warm-up length in optimizer steps (MMDetection); replaces "
                                          "warmup_epochs")
    decay_epochs: float | None = _key(None, "cosine/polynomial: epochs to reach min_lr (default: the rest of the run);"
                                            " step/exponential: decay period")
    decay_rate: float = _key(0.1, "multiplier per decay (step/multi-step/exponential); power for polynomial")
    multi_step_decay_milestones: tuple[int, ...] = _key((30, 60, 90), "epochs at which multi_step_decay decays")
    lr_epoch_stair: bool = _key(False, "change the lr once per epoch instead of every step")
    num_cycles: int = _key(1, "cosine cycles")
    cycle_decay: float = _key(1.0, "peak multiplier from one cosine cycle to the next")


@dataclass(frozen=True)
class TrainConfig:
    epoch_size: int = _key(10, "epochs")
    loss: str = _key("ce", "ce (cross-entropy) or bce (binary cross-entropy)", ("ce", "bce"))
    label_smoothing: float = _key(0.0, "label smoothing")
    class_weights: str = _key("none", "auto: weight the cross-entropy by inverse class frequency", ("none", "auto"))
    val_while_train: bool = _key(True, "validate during training")
    val_interval: int = _key(1, "validate every N epochs (and after the last)")
    log_interval: int = _key(20, "progress-bar update (loss, lr, img/s) every N steps")
    log_csv: bool = _key(True, "write metrics.csv (one row per epoch, every metric) in ckpt_save_dir")
    log_tensorboard: bool = _key(False, "write TensorBoard scalars to ckpt_save_dir/tensorboard (needs the "
                                        "tensorboard package: pip install -r requirements-tensorboard.txt)")
    seed: int = _key(42, "random seed")
    best_metric: str = _key("auto", "what <model>_best is chosen by: top1 (classification), bbox_mAP, bbox_mAP50, "
                                    "segm_mAP or segm_mAP50 (detection); auto: top1 or bbox_mAP",
                            ("auto", "top1", "bbox_mAP", "bbox_mAP50", "segm_mAP", "segm_mAP50"))
    amp_level: str = _key("O0", "O0: fp32; O1/O2/O3: mixed precision (CUDA)", ("O0", "O1", "O2", "O3"))
    clip_grad: bool = _key(False, "clip the gradient norm")
    clip_value: float = _key(15.0, "max gradient norm when clip_grad")
    gradient_accumulation_steps: int = _key(1, "batches per optimizer step")
    ema: bool = _key(False, "keep an exponential moving average of the weights; it is validated and saved")
    ema_decay: float = _key(0.9999, "EMA decay")
    ckpt_save_dir: str | None = _key(None, "where checkpoints, results.txt, config.yaml and the log go (default: "
                                           "./ckpt/<model>_<YYYYmmdd-HHMMSS>)")
    overwrite: bool = _key(False, "replace an earlier run in ckpt_save_dir (else a run there is never overwritten)")
    resume: str | None = _key(None, "continue a stopped run from its <model>_last.pth: a path, or auto (the newest "
                                    "_last in ckpt_save_dir, or under ./ckpt)", literals=("auto",))
    resume_force: bool = _key(False, "resume even when the model, classes or data differ from the checkpoint's")
    keep_checkpoint_max: int = _key(0, "also keep this many per-epoch checkpoints <model>-<epoch>.pth (0: none)")
    ckpt_save_policy: str = _key("latest_k", "which per-epoch checkpoints to keep", ("latest_k", "top_k"))
    ckpt_save_interval: int = _key(1, "write a per-epoch checkpoint every N epochs")
    ckpt_save_steps: int = _key(0, "also write <model>_last.pth every N optimizer steps, so a crash loses little "
                                   "(0: at epoch ends only)")
    save_format: str = _key("pth", "checkpoint weights: pth (torch.save), or safetensors (.safetensors plus a .json "
                                   "sidecar holding config, classes and metrics)", ("pth", "safetensors"))
    distribute: bool = _key(False, "MindCV key: several GPUs/machines when launched by torchrun; without torchrun the "
                                   "run trains alone (logged); any torchrun launch trains distributed")
    sync_bn: bool = _key(False, "distributed CUDA runs: BatchNorm statistics over the global batch (SyncBatchNorm)")
    device: str = _key("auto", "auto (cuda when available), cpu or cuda", ("auto", "cpu", "cuda"))
    channels_last: bool = _key(True, "NHWC memory format (measured faster for CNNs on CPU and GPU)")
    compile: bool = _key(False, "torch.compile the model (slow first epoch, faster later ones; needs a C++ compiler)")


@dataclass(frozen=True)
class DetectionConfig:
    """The keys only `task: detection` reads (tunecv.detection)."""

    train_ann_file: str | None = _key(None, "COCO instances json of the training images, relative to "
                                            "data_dir (default: annotations/instances_<train_split>.json)")
    val_ann_file: str | None = _key(None, "COCO instances json of the validation images (default: "
                                          "annotations/instances_<val_split>.json)")
    keep_empty_images: bool = _key(False, "keep training images without annotations (as negatives); "
                                          "by default they are left out, as MMDetection's filter_empty_gt does")
    min_size: tuple[int, ...] = _key((800,), "the model resizes each image so its shorter side is min_size "
                                             "(several: one drawn per training image, multi-scale training; the "
                                             "last for evaluation) ...")
    max_size: int = _key(1333, "... and its longer side at most max_size")
    trainable_backbone_layers: int | None = _key(None, "torchvision's count of backbone stages that "
                                                       "train, from the top (default: all; the same as frozen_stages "
                                                       "counted from the other end)")


SECTIONS = {"data": DataConfig, "loader": LoaderConfig, "model": ModelConfig,
            "finetune": FinetuneConfig, "optim": OptimConfig, "sched": SchedConfig, "train": TrainConfig,
            "detection": DetectionConfig}


DETECTION_METRICS = ("bbox_mAP", "bbox_mAP50", "segm_mAP", "segm_mAP50")
# every key of the shared sections a `task: detection` run reads; its own section's keys come with it
DETECTION_SHARED_KEYS = frozenset({
    "task", "data_dir", "train_split", "val_split", "image_root", "hflip",
    "batch_size", "num_parallel_workers", "shuffle",
    "model", "num_classes", "pretrained", "ckpt_path",
    "frozen_stages", "freeze_bn",
    "opt", "lr", "momentum", "weight_decay", "use_nesterov", "weight_decay_filter", "eps", "auto_scale_lr",
    "scheduler", "min_lr", "warmup_epochs", "warmup_factor", "warmup_iters", "decay_epochs", "decay_rate",
    "multi_step_decay_milestones", "lr_epoch_stair", "num_cycles", "cycle_decay",
    "epoch_size", "seed", "amp_level", "clip_grad", "clip_value", "val_while_train", "val_interval", "log_csv",
    "log_tensorboard", "ckpt_save_dir", "overwrite", "resume", "resume_force", "keep_checkpoint_max",
    "ckpt_save_policy", "ckpt_save_interval", "save_format", "distribute", "device", "best_metric",
})
# key → (section name, field)
KEYS: dict[str, tuple[str, dataclasses.Field]] = {
    f.name: (section, f) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
# the keys each task reads (what a run's config.yaml holds), and the best_metric values it scores
_OWN_KEYS = {section: frozenset(f.name for f in dataclasses.fields(cls)) for section, cls in SECTIONS.items()}
_SHARED = ("data", "loader", "model", "finetune", "optim", "sched", "train")  # every section but a task's own
TASK_KEYS = {"classification": frozenset().union(*(_OWN_KEYS[section] for section in _SHARED)),
             "detection": DETECTION_SHARED_KEYS | _OWN_KEYS["detection"]}
TASK_METRICS = {"classification": ("top1",), "detection": DETECTION_METRICS}


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)

    def to_flat(self) -> dict[str, Any]:
        """The flat MindCV-style key → value dict (plain Python values, lists for tuples) of the keys its task
        reads."""
        reads, flat = TASK_KEYS[self.model.task], {}
        for section in SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                if key in reads:
                    flat[key] = _plain(value)
        return flat


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: what yaml.safe_dump and json can write."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
