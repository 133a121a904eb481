"""The one typed configuration of a retrain run.

`RetrainConfig` holds a section per step plus the training seed. It is built once, from the flow's
parameters (`data`, `text_col`, `label_col`, `workdir`, `overrides`), and each step receives only the
section it needs. Overrides use dotted keys (`train.max_epochs=2`), the same on the command line
(`--set`) and in a deployment's `overrides` parameter.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.files import parse_delimiter, sha256_file


def local_path(value: Any) -> Any:
    """A path given as a local path or a `file://` URL, as a path; any other URL scheme is refused with a hint.

    Object storage (s3://, gs://, az://) is reached through a mounted volume (README, "Docker and
    Kubernetes work pools"): the pipeline renames files into place to make every write atomic, which a bucket
    cannot do, while a mounted volume can.
    """
    if not isinstance(value, str) or "://" not in value:
        return value
    from urllib.parse import unquote, urlparse

    url = urlparse(value)
    if url.scheme == "file" and url.netloc in ("", "localhost"):
        return Path(unquote(url.path))
    raise ValueError(f"{value!r}: only local paths and file:// URLs are read directly; mount {url.scheme}:// "
                     "storage as a volume (s3fs, gcsfuse, a Kubernetes CSI volume) and give the mount path")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DATA = PROJECT_ROOT / "data" / "financial-phrasebank" / "phrasebank.csv"
PROJECT_NLTK_DATA = PROJECT_ROOT / ".nltk_data"


class Section(BaseModel):
    """A config section: unknown keys are errors, so a typo in `--set` never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Section):
    path: Path = BUNDLED_DATA
    _local_path = field_validator("path", mode="before")(local_path)
    text_col: str = "text"
    label_col: str = "label"
    labels: tuple[str, ...] | None = None
    encoding: str = "utf-8"
    max_chars: int = Field(2000, gt=0)
    max_file_mb: int = Field(512, gt=0)
    min_per_class: int = Field(5, ge=1)
    conflicts: Literal["error", "drop", "majority"] = "error"
    max_train_rows: int = Field(0, ge=0)
    # "auto": a tab for .tsv, detected (csv.Sniffer) for .csv; or comma, semicolon, tab, pipe, one character
    delimiter: str = "auto"
    # CSV/TSV: "auto" = line 1 is the header unless it looks like a data row (then refused, with the fix); "first" =
    # line 1 is the header whatever it holds; "none" = no header line, columns numbered 1, 2, ... (--text-col 1)
    header: Literal["auto", "first", "none"] = "auto"

    @field_validator("delimiter", mode="before")
    @classmethod
    def _parse_delimiter(cls, value: Any) -> Any:
        return parse_delimiter(value)

    def cache_fingerprint(self) -> dict[str, Any]:
        """The file counts by its bytes, never by its path; the other settings by value."""
        content = sha256_file(self.path) if Path(self.path).is_file() else f"missing:{self.path}"
        return {"content_sha256": content, **self.model_dump(mode="json", exclude={"path"})}

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value or None


class ValidateConfig(Section):
    max_reported: int = Field(50, ge=1)
    drift: Literal["warn", "fail"] = "warn"
    drift_alpha: float = Field(0.01, gt=0, lt=1)
    drift_min_effect: float = Field(0.1, ge=0, le=1)
    drift_min_unseen_increase: float = Field(0.05, ge=0, le=1)
    # Monte Carlo resamples of each drift permutation test: the smallest p-value is 1 / (1 + this)
    drift_permutations: int = Field(1999, ge=99)


class SplitConfig(Section):
    salt: str = "retrain-split-v1"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)


class AugmentConfig(Section):
    # "auto": what benchmarks/augmentation_ablation.py measured best for this backbone (tasks.augment.plan);
    # "paper": Wei & Zou's recommendation by training-set size; an integer: that many copies per sentence.
    n_aug: int | Literal["auto", "paper"] = Field("auto", union_mode="left_to_right")
    alpha: float = Field(0.1, ge=0, le=0.5)
    alpha_sr: float | None = Field(None, ge=0, le=0.5)
    alpha_ri: float | None = Field(None, ge=0, le=0.5)
    alpha_rs: float | None = Field(None, ge=0, le=0.5)
    p_rd: float | None = Field(None, ge=0, le=0.5)
    protected_words: tuple[str, ...] = ()
    wordnet_dir: Path = PROJECT_NLTK_DATA
    # WordNet is English: "auto" augments only the sentences identified as English (py3langid) and counts the
    # others; "en" takes every sentence as English; any other language code leaves every sentence untouched.
    language: str = Field("auto", pattern=r"^(auto|[a-z]{2,3})$")

    def cache_fingerprint(self) -> dict[str, Any]:
        """Where WordNet is installed does not change what augmentation produces."""
        return self.model_dump(mode="json", exclude={"wordnet_dir"})

    @field_validator("n_aug", mode="before")
    @classmethod
    def _parse_n_aug(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("protected_words", mode="before")
    @classmethod
    def _split_words(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value


class TokenizeConfig(Section):
    max_length: int = Field(0, ge=0, le=512)
    length_percentile: float = Field(99.0, gt=0, le=100)


class TrainConfig(Section):
    """The training recipe (tasks/finetune.py explains each piece). Head and top blocks train together."""

    unfreeze_top: int = Field(2, ge=0, description="top transformer blocks trained with the head (0: head alone; "
                              "all-mpnet-base-v2: 4 unless set); at most the backbone's blocks (checked when the "
                              "backbone is resolved)")
    # The step budget: epochs = clamp(ceil(min_steps / steps per epoch), min_epochs, max_epochs) when blocks
    # train; the head alone trains max_epochs. Early stopping on validation macro-F1 may end it sooner.
    min_steps: int = Field(400, ge=1, description="step budget's floor (all-mpnet-base-v2: 200 unless set, "
                                                   "schemas.config.BODY_TRAIN_DEFAULTS)")
    min_epochs: int = Field(4, ge=1, description="epochs' floor (all-mpnet-base-v2: 2 unless set)")
    max_epochs: int = Field(20, ge=1)
    patience: int = Field(3, ge=0, description="epochs without a gain in validation macro-F1 before stopping")
    min_val_per_class: int = Field(10, ge=0, description="fewer validation rows of a class: no selection, "
                                                         "the whole budget is trained and the last epoch kept")
    batch_size: int = Field(32, ge=1)
    chunk_batches: int = Field(4, ge=1, description="batches per random chunk sorted by length")
    # "auto": 1e-3 when blocks train with the head; 3e-2 for the head alone, which starts from random on
    # unit-length embeddings and must move far in few steps (chosen on validation: benchmarks/quality.py)
    learning_rate: float | Literal["auto"] = Field("auto", union_mode="left_to_right",
                                                   description="peak learning rate of the head")
    finetune_learning_rate: float = Field(1e-4, gt=0, description="peak learning rate of the top block")
    layer_decay: float = Field(1.0, gt=0, le=1, description="learning-rate factor per block further down")
    weight_decay: float = Field(0.01, ge=0, description="AdamW's decoupled weight decay")
    warmup: float = Field(0.1, ge=0, lt=1, description="share of the steps spent warming up linearly")
    clip_norm: float = Field(1.0, ge=0, description="gradient clipping at this global norm (0: none)")
    dropout: float = Field(0.1, ge=0, lt=1)
    hidden_units: int = Field(0, ge=0)
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    class_weights: bool = False
    ensemble: int = Field(1, ge=1, le=10, description="seed ensemble: k models trained by this recipe with seeds "
                                                      "seed..seed+k-1 on the same features, saved as one model "
                                                      "that averages their probabilities (1: one model)")
    # Self-training (tasks/pseudo_label.py): the champion's confident labels of an unlabelled file join the
    # training split. Off by default: it did not win on validation (benchmarks/active_learning.py).
    unlabelled: Path | None = Field(None, description="unlabelled file (same format and text column as the data) "
                                                      "for self-training; empty: off")
    _local_unlabelled = field_validator("unlabelled", mode="before")(
        lambda v: local_path(v) if v not in (None, "") else None)
    pseudo_threshold: float = Field(0.9, gt=0, le=1, description="a pseudo-label is used where the champion's "
                                                                 "top probability is at least this")

    def cache_fingerprint(self) -> dict[str, Any]:
        """Every setting by value, the unlabelled file by its bytes; without one, the self-training settings are
        left out (so the keys of runs without it are what they were before the setting existed); so is an unset
        `fewshot_unfreeze_top`."""
        out = self.model_dump(mode="json", exclude={"unlabelled", "pseudo_threshold", "fewshot_unfreeze_top"})
        if self.fewshot_unfreeze_top is not None:
            out["fewshot_unfreeze_top"] = self.fewshot_unfreeze_top
        if self.unlabelled is not None:
            path = Path(self.unlabelled)
            out["unlabelled_sha256"] = sha256_file(path) if path.is_file() else f"missing:{path}"
            out["pseudo_threshold"] = self.pseudo_threshold
        return out

    def head_learning_rate(self) -> float:
        """`learning_rate` as a number: "auto" is 1e-3 with trainable blocks, 3e-2 for the head alone."""
        if self.learning_rate != "auto":
            return float(self.learning_rate)
        return 1e-3 if self.unfreeze_top else 3e-2

    # Which method trains (tasks/finetune.py, "Regimes"): "finetune" = the recipe above; "fewshot" = contrastive
    # tuning of the top blocks on same/different-label pairs, then a head on the tuned embeddings (SetFit's
    # method); "frozen" = the head alone on the frozen embeddings; "auto" = "fewshot" while the smallest class
    # has fewer than `fewshot_below` training rows, else "finetune" (the threshold measured in
    # benchmarks/regime_selection.py, on validation rows only).
    regime: Literal["auto", "fewshot", "finetune", "frozen"] = "auto"
    fewshot_below: int = Field(65, ge=0, description="train.regime=auto: few-shot below this many training rows "
                                                     "in the smallest class")
    fewshot_unfreeze_top: int | None = Field(None, ge=0, description="few-shot: top transformer blocks tuned (unset: "
                                             "train.unfreeze_top; all-mpnet-base-v2: 2 unless either is set)")
    pair_iterations: int = Field(20, ge=1, description="few-shot: positive and negative pairs per training row "
                                                       "each (SetFit's num_iterations)")
    pair_batch_size: int = Field(16, ge=1, description="few-shot: pairs per optimizer step")
    contrastive_epochs: int = Field(1, ge=1, description="few-shot: passes over the pairs")
    contrastive_learning_rate: float = Field(1e-4, gt=0, description="few-shot: peak learning rate of the blocks "
                                             "(chosen on validation: benchmarks/regime_selection.py)")
    fewshot_head: Literal["logistic", "softmax"] = Field(
        "logistic", description="few-shot: the head on the tuned embeddings: scikit-learn logistic regression "
                                "(C=fewshot_c; SetFit's default) or the softmax head trained by the recipe above")
    label_templates: int = Field(2, ge=0, description="few-shot: add this many rows per class of 'This sentence is "
                                 "{label}.' to the training rows (SetFit's add_templated_examples; 0: off). On by "
                                 "default: +3 to +9 points of validation macro-F1 at 8 rows per class on both data sets "
                                 "measured (README); turn it off where label names mean nothing (codes, numbers)")
    fewshot_c: float = Field(1.0, gt=0, description="few-shot: inverse regularisation of the logistic head")

    # float16 compute for the trainable blocks: "auto" = on exactly where a GPU is visible (core.model.hardware)
    mixed_precision: bool | Literal["auto"] = Field("auto", union_mode="left_to_right")


class GateConfig(Section):
    """Champion/challenger: promote only a challenger better with confidence on the same test rows."""

    confidence: float = Field(0.95, ge=0.5, lt=1)
    bootstrap_samples: int = Field(2000, ge=100)
    on_label_change: Literal["promote", "keep"] = "promote"
    # The champion's split settings (salt, fractions) differ from today's, so it may have trained on today's test
    # rows: "baseline" gates the challenger against the majority-class predictor, as a first model; "promote"
    # and "keep" decide without a test.
    on_split_change: Literal["baseline", "promote", "keep"] = "baseline"
    # Every decision reports the smallest true macro-F1 gain its test rows detect with this power at `confidence`
    # and says plainly when it is above `detectable_warn_above`.
    power: float = Field(0.8, gt=0.5, lt=1)
    detectable_warn_above: float = Field(0.05, ge=0, le=1)
    unmeasurable: Literal["keep", "promote"] = Field(
        "keep", description="the test split is too small to measure (evaluate.min_test_per_class): keep the "
                            "champion, or promote on the cross-validated estimate (a first model is promoted either way)")
    approval: Literal["auto", "manual"] = Field(
        "auto", description="auto: a challenger that passes the gate becomes champion; manual: it becomes a "
                            "candidate that a second person approves (Prefect UI form, or `flows.registry approve`)")
    approval_timeout: int = Field(86400, ge=1, description="seconds a candidate waits for a reviewer: a paused "
                                                           "deployment run, or `flows.registry approve`, after which it expires")


class EvaluateConfig(Section):
    """When the test split is too small to measure, and the cross-validated estimate that stands in for it."""

    min_test_per_class: int = Field(20, ge=0, description="fewer expected test rows of some class (its rows times "
                                    "split.test_fraction): no hold-out; every labelled row trains the model and "
                                    "quality is estimated by repeated stratified k-fold cross-validation (0: never)")
    cv_folds: int = Field(5, ge=2, description="estimate mode: folds of the repeated stratified k-fold "
                                                "cross-validation (fewer if the smallest class has fewer rows)")
    cv_repeats: int = Field(2, ge=1, description="estimate mode: repeats of the k folds, each with another shuffle")
    confidence: float = Field(0.95, ge=0.5, lt=1, description="estimate mode: two-sided level of the interval "
                                                                 "(Nadeau & Bengio's corrected resampled t)")


class ModelConfig(Section):
    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    backbone: Path | None = Field(None, description="all-minilm-l6-v2 (the default, bundled), all-mpnet-base-v2 "
                                  "(installed by `make mpnet`) or a backbone folder (keras-hub BERT preset, Hugging "
                                  "Face BERT or MPNet folder)")


class DaskConfig(Section):
    """`runner=dask`: an existing scheduler (`address`), or a local cluster of `workers` processes."""

    address: str = ""
    workers: int = Field(2, ge=1)
    shards: int = Field(0, ge=0, description="shards per data-parallel step; 0 = two per worker")


class PredictConfig(Section):
    """Batch prediction (`flows.predict`): rows read, checked and scored at a time, and sentences per batch."""

    chunk_rows: int = Field(4096, ge=1, description="rows read, scored and written at a time (memory is bounded "
                                                     "by this, not by the file)")
    batch_size: int = Field(64, ge=1, description="sentences per forward pass (length-grouped within a chunk)")


class ServingConfig(Section):
    """Serving export: every change of champion writes its SavedModel as `<dir>/<model name>/<N>/` (TF Serving's
    model base path; N grows by one each time), keeping the newest `keep`."""

    dir: Path | None = None
    keep: int = Field(3, ge=1, description="numbered SavedModels kept under <dir>/<model name>/")

class SuggestConfig(Section):
    """After each run, what to label next (`tasks.suggest`): the `n` rows of the unlabelled file `pool` most worth
    labelling for the champion, written to `runs/<run_id>/suggestions.csv` and named in the run report. Empty
    `pool`: off."""

    pool: Path | None = None
    _local_pool = field_validator("pool", mode="before")(lambda v: local_path(v) if v not in (None, "") else None)
    n: int = Field(100, ge=1, description="rows to suggest")


# Training defaults that differ per body, applied where `train.*` leaves them unset (a value given always wins).
# all-mpnet-base-v2, chosen on validation (benchmarks/mpnet_recipe.py, README "A second body"): at full size its
# validation macro-F1 peaks by the 2nd epoch of MiniLM's 4-epoch budget, and half the budget scores the same in
# half the training time; jointly training the top 4 blocks beats the top 2 (0.842 +- 0.008 against 0.829 +-
# 0.002, 3 seeds). The few-shot regime keeps tuning 2, the setting its learning curve was measured with.
BODY_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "all-mpnet-base-v2": {"min_steps": 200, "min_epochs": 2, "unfreeze_top": 4, "fewshot_unfreeze_top": 2}}


class RetrainConfig(Section):
    """Everything a retrain run needs, one section per step; `seed` drives training randomness only."""

    seed: int = 13
    workdir: Path = Path("workdir")
    _local_workdir = field_validator("workdir", mode="before")(local_path)
    runner: Literal["threads", "dask"] = "threads"
    data: DataConfig = DataConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    split: SplitConfig = SplitConfig()
    augment: AugmentConfig = AugmentConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    model: ModelConfig = ModelConfig()
    dask: DaskConfig = DaskConfig()
    predict: PredictConfig = PredictConfig()
    serving: ServingConfig = ServingConfig()

    suggest: SuggestConfig = SuggestConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _body_train_defaults(cls, values: Any) -> Any:
        """`BODY_TRAIN_DEFAULTS` of the body `model.backbone` names, under the `train` settings given."""
        if not isinstance(values, dict):
            return values
        model = values.get("model")
        name = model.get("backbone") if isinstance(model, dict) else getattr(model, "backbone", None)
        defaults = BODY_TRAIN_DEFAULTS.get(str(name).lower()) if name is not None else None
        if not defaults:
            return values
        train = values.get("train", {})
        given = train.model_fields_set if isinstance(train, TrainConfig) else set(train) if isinstance(train, dict) else set()
        if "unfreeze_top" in given:  # a user's train.unfreeze_top (0: head alone) speaks for both regimes
            defaults = {k: v for k, v in defaults.items() if k != "fewshot_unfreeze_top"}
        if isinstance(train, TrainConfig):
            train = train.model_copy(update={k: v for k, v in defaults.items() if k not in given})
        elif isinstance(train, dict):
            train = {**defaults, **train}
        return {**values, "train": train}

    @classmethod
    def from_parameters(
        cls,
        data: str | Path | None = None,
        text_col: str = "text",
        label_col: str = "label",
        workdir: str | Path = "workdir",
        overrides: dict[str, Any] | None = None,
    ) -> "RetrainConfig":
        """Build the config from the flow's parameters; raises `ConfigError` on unknown keys or bad values."""
        tree: dict[str, Any] = {"workdir": workdir, "data": {"text_col": text_col, "label_col": label_col}}
        if data:
            tree["data"]["path"] = data
        for key, value in (overrides or {}).items():
            _assign(tree, key, value)
        try:
            return cls.model_validate(tree)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None


class ConfigError(ValueError):
    """An override names an unknown key or gives a value of the wrong kind."""


def known_keys() -> list[str]:
    """Every dotted key `--set` accepts, e.g. `train.max_epochs`."""
    keys = []
    for name, field in RetrainConfig.model_fields.items():
        name = field.alias or name
        section = field.annotation
        if isinstance(section, type) and issubclass(section, Section):
            keys += [f"{name}.{sub}" for sub in section.model_fields]
        else:
            keys.append(name)
    return keys


def parse_assignment(text: str) -> tuple[str, str]:
    """Split `key=value` as given to `--set`; raises `ConfigError` if there is no `=`."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _assign(tree: dict[str, Any], dotted: str, value: Any) -> None:
    if dotted not in known_keys():
        hint = difflib.get_close_matches(dotted, known_keys(), n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"unknown setting {dotted!r}.{suggestion} Known settings: {', '.join(known_keys())}")
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "validate_") or "config"
        where = where.replace("validate_", "validate")
        lines.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
    return "invalid setting: " + "; ".join(lines)
