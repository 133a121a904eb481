"""The classifier's Keras graph, in the pieces that let the frozen part be computed once.

With the top `n` of the backbone's `blocks` transformer blocks trainable (`train.unfreeze_top`), the network
splits after its `frozen_blocks = blocks - n` bottom blocks:
- the *bottom* (embeddings and blocks 0..frozen_blocks-1) is frozen: its token-level output for a sentence never
  changes, so `tasks.embed` computes it once and training reads it from disk;
- the *top* (blocks frozen_blocks..blocks-1, masked mean pooling, L2 normalisation, head) is what trains.
With `n = 0` the bottom is the whole encoder and its stored output is the pooled sentence embedding.
The number of blocks and the hidden size are the backbone's own (`num_layers`, `hidden_dim`), never assumed.
The saved model joins the pieces again (`build_classifier`): token ids in, probabilities out.
The piecewise graph calls the backbone's own layers in the backbone's order, so it computes exactly what
`backbone(...)` computes (a test checks it). Either body fits: keras-hub's BertBackbone, and MPNet
(`core.model.mpnet`), whose blocks also take the relative-position bias: each part that runs blocks computes it
once from its own input's length with the backbone's one `relative_position_bias` layer (it depends on the
length alone, so the bottom and the top get the same values) and hands it to every block with the padding mask;
it stays frozen when top blocks train (the bottom's stored output was computed with it).
"""

from __future__ import annotations

import keras

from core.model.layers import L2Normalize, MaskedMeanPooling, ZerosLike
from schemas.config import TrainConfig


def token_inputs() -> dict[str, keras.KerasTensor]:
    """The model's inputs: padded `token_ids` and the `padding_mask` (1 for real tokens)."""
    return {
        "token_ids": keras.Input(shape=(None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input(shape=(None,), dtype="int32", name="padding_mask"),
    }


def pooled(backbone, inputs: dict[str, keras.KerasTensor]) -> keras.KerasTensor:
    """Unit-length masked mean of the backbone's last hidden states, as sentence-transformers pools."""
    feed = {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}
    if "segment_ids" in backbone.input:  # BERT: single-segment input
        feed["segment_ids"] = ZerosLike(name="segment_ids")(inputs["token_ids"])
    sequence = backbone(feed)["sequence_output"]
    return L2Normalize(name="normalize")(MaskedMeanPooling(name="mean_pool")(sequence, inputs["padding_mask"]))


def transformer_blocks(backbone) -> list:
    """The backbone's transformer blocks, bottom first."""
    return [layer for layer in backbone.layers if layer.name.startswith("transformer_layer_")]


def _has_layer(model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def embedded(backbone, token_ids: keras.KerasTensor, padding_mask: keras.KerasTensor) -> keras.KerasTensor:
    """The backbone's embedding layers, in its own order: token ids (batch, length) int32 -> the input of
    block 0 (batch, length, hidden) float. BERT: single-segment input (segment ids all 0), positions 0, 1, ...;
    MPNet: positions numbered from the padding mask (`PaddingOffsetPositionEmbedding`)."""
    x = backbone.get_layer("token_embedding")(token_ids)
    if not _has_layer(backbone, "segment_embedding"):  # MPNet
        x = backbone.get_layer("embeddings_add")((x, backbone.get_layer("position_embedding")(padding_mask)))
        return backbone.get_layer("embeddings_dropout")(backbone.get_layer("embeddings_layer_norm")(x))
    positions = backbone.get_layer("position_embedding")(x)
    segments = backbone.get_layer("segment_embedding")(ZerosLike(name="segment_ids")(token_ids))
    x = backbone.get_layer("embeddings_add")((x, positions, segments))
    return backbone.get_layer("embeddings_dropout")(backbone.get_layer("embeddings_layer_norm")(x))


def block_extras(model, x: keras.KerasTensor) -> dict[str, keras.KerasTensor]:
    """What every block of `model` (a backbone, or a part built from one) takes besides the hidden states and the
    padding mask: nothing for BERT; for MPNet the relative-position bias (1, heads, length, length) of its
    `relative_position_bias` layer for `x`'s length, computed once here for all the blocks of a part."""
    if _has_layer(model, "relative_position_bias"):
        return {"position_bias": model.get_layer("relative_position_bias")(x)}
    return {}


def run_blocks(model, blocks: list, x: keras.KerasTensor, mask: keras.KerasTensor) -> keras.KerasTensor:
    """`blocks` (of `model`) applied in order to `x` (batch, length, hidden) with the padding mask and
    `block_extras` (computed once)."""
    extra = block_extras(model, x) if blocks else {}
    for block in blocks:
        x = block(x, padding_mask=mask, **extra)
    return x


def build_bottom(backbone, frozen_blocks: int) -> keras.Model:
    """token ids -> {"hidden": output of the `frozen_blocks` bottom blocks (batch, length, hidden_dim), present
    only when some block is left to train, "embedding": final pooled embedding (batch, hidden_dim)}.

    One pass through the frozen backbone yields both what the head trains on first and what the top
    blocks train on next.
    """
    backbone.trainable = False
    inputs = token_inputs()
    token_ids, mask = inputs["token_ids"], inputs["padding_mask"]
    x = embedded(backbone, token_ids, mask)
    hidden = x
    blocks = transformer_blocks(backbone)
    extra = block_extras(backbone, x)
    for index, block in enumerate(blocks):
        if index == frozen_blocks:
            hidden = x
        x = block(x, padding_mask=mask, **extra)
    outputs = {"embedding": L2Normalize(name="normalize")(MaskedMeanPooling(name="mean_pool")(x, mask))}
    if frozen_blocks < len(blocks):
        outputs["hidden"] = hidden
    return keras.Model(inputs, outputs, name="bottom")


def build_top(backbone, head: keras.Model, frozen_blocks: int, name: str = "top") -> keras.Model:
    """{"hidden", "padding_mask"} -> probabilities: the blocks of `backbone` above its `frozen_blocks` bottom
    ones, pooling, `head`."""
    inputs, x = _top_embedding(backbone, frozen_blocks, prefix="top")
    return keras.Model(inputs, head(x), name=name)


def build_top_encoder(backbone, frozen_blocks: int, name: str = "top_encoder") -> keras.Model:
    """{"hidden", "padding_mask"} -> unit-length sentence embedding (batch, hidden_dim) float32: the blocks of
    `backbone` above its `frozen_blocks` bottom ones, masked mean pooling and L2 normalisation, the sentence
    encoder the few-shot regime tunes (`core.model.contrastive`). Its blocks are `backbone`'s own layers, so a
    classifier built from `backbone` afterwards (`build_classifier`) carries the tuned blocks."""
    inputs, x = _top_embedding(backbone, frozen_blocks, prefix="encoder")
    return keras.Model(inputs, x, name=name)


def _top_embedding(backbone, frozen_blocks: int, prefix: str):
    """The inputs {"hidden", "padding_mask"} and the unit-length sentence embedding that the blocks above the
    `frozen_blocks` bottom ones, masked mean pooling and L2 normalisation make of them (layers named
    `<prefix>_mean_pool`, `<prefix>_normalize`, as saved models know them)."""
    hidden = keras.Input(shape=(None, backbone.hidden_dim), name="hidden")
    mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    if _has_layer(backbone, "relative_position_bias"):  # shared with the frozen bottom: never trained
        backbone.get_layer("relative_position_bias").trainable = False
    x = run_blocks(backbone, transformer_blocks(backbone)[frozen_blocks:], hidden, mask)
    x = L2Normalize(name=f"{prefix}_normalize")(MaskedMeanPooling(name=f"{prefix}_mean_pool")(x, mask))
    return {"hidden": hidden, "padding_mask": mask}, x


def build_head(n_labels: int, cfg: TrainConfig, input_dim: int, seed: int = 0, name: str = "head") -> keras.Model:
    """embedding (batch, input_dim) float32 -> class probabilities (batch, n_labels): dropout, an optional
    hidden layer, softmax with L1/L2 on its kernel. Its initial weights and dropout masks follow `seed` alone."""
    seeds = iter(range(seed % 2**20 * 1000 + 1, seed % 2**20 * 1000 + 10))
    glorot = lambda: keras.initializers.GlorotUniform(seed=next(seeds))  # noqa: E731
    inputs = keras.Input(shape=(input_dim,), name="embedding")
    x = keras.layers.Dropout(cfg.dropout, seed=next(seeds), name="head_dropout")(inputs)
    if cfg.hidden_units:
        x = keras.layers.Dense(cfg.hidden_units, activation="gelu", name="head_hidden", kernel_initializer=glorot(),
                               kernel_regularizer=keras.regularizers.L1L2(cfg.l1, cfg.l2))(x)
        x = keras.layers.Dropout(cfg.dropout, seed=next(seeds), name="head_hidden_dropout")(x)
    outputs = keras.layers.Dense(n_labels, activation="softmax", name="head_output", kernel_initializer=glorot(),
                                 kernel_regularizer=keras.regularizers.L1L2(cfg.l1, cfg.l2))(x)
    return keras.Model(inputs, outputs, name=name)


def build_classifier(backbone, head: keras.Model) -> keras.Model:
    """The servable model: token ids and padding mask in, class probabilities out (nothing trainable)."""
    backbone.trainable = False
    head.trainable = False
    # A fixed name: Keras numbers unnamed layers per process ("bert_backbone_1" after an embed step ran in
    # the same process), which would make the saved file depend on what ran before, not on the model.
    backbone.name = "backbone"
    inputs = token_inputs()
    return keras.Model(inputs, head(pooled(backbone, inputs)), name="classifier")


def build_shared_bottom(backbone, frozen_blocks: int) -> keras.Model:
    """token ids -> the output of the `frozen_blocks` bottom blocks (token level): the frozen part an ensemble's
    members share, the backbone's own layers in the backbone's order (as `build_bottom` computes the stored
    `hidden`)."""
    inputs = token_inputs()
    token_ids, mask = inputs["token_ids"], inputs["padding_mask"]
    x = run_blocks(backbone, transformer_blocks(backbone)[:frozen_blocks], embedded(backbone, token_ids, mask), mask)
    return keras.Model(inputs, x, name="bottom")


def build_ensemble(backbones: list, heads: list[keras.Model], frozen_blocks: int) -> keras.Model:
    """The servable model of a seed ensemble (`train.ensemble = k`): token ids and padding mask in, the mean of
    the k members' class probabilities out (nothing trainable).

    Member i is its own trained top (the blocks of `backbones[i]` above the `frozen_blocks` bottom ones,
    pooling, `heads[i]`) on one shared frozen bottom, computed once: `bottom` (embeddings and blocks
    0..frozen_blocks-1 of `backbones[0]`, untrained in every member) -> `ensemble` ({"hidden", "padding_mask"}
    -> `member_1` ... `member_k` -> their mean). With no block trained (`frozen_blocks` = the backbone's
    blocks) the members differ in their heads alone: `build_classifier` of the backbone and
    a `head` that averages the k heads, the single model's layout. `stored_part` finds either layout's part
    that runs on stored features.
    """
    for backbone in backbones:
        backbone.trainable = False
    heads_only = frozen_blocks >= len(transformer_blocks(backbones[0]))
    for index, head in enumerate(heads, start=1):
        head.trainable = False
        head.name = f"member_{index}" if heads_only else "head"
    if heads_only:
        embedding = keras.Input(shape=(heads[0].inputs[0].shape[-1],), name="embedding")
        mean = keras.layers.Average(name="ensemble_mean")([head(embedding) for head in heads])
        return build_classifier(backbones[0], keras.Model(embedding, mean, name="head"))
    hidden = keras.Input(shape=(None, backbones[0].hidden_dim), name="hidden")
    mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    members = [build_top(backbone, head, frozen_blocks, name=f"member_{index}")
               for index, (backbone, head) in enumerate(zip(backbones, heads), start=1)]
    mean = keras.layers.Average(name="ensemble_mean")([m({"hidden": hidden, "padding_mask": mask}) for m in members])
    ensemble = keras.Model({"hidden": hidden, "padding_mask": mask}, mean, name="ensemble")
    inputs = token_inputs()
    bottom = build_shared_bottom(backbones[0], frozen_blocks)
    return keras.Model(inputs, ensemble({"hidden": bottom(inputs), "padding_mask": inputs["padding_mask"]}),
                       name="classifier")


def _is_ensemble_of_tops(classifier) -> bool:
    return any(layer.name == "ensemble" for layer in classifier.layers)


def encoder_depth(classifier) -> int:
    """The number of transformer blocks between a saved classifier's token ids and its pooling: the
    backbone's, or an ensemble's shared bottom plus one member's top."""
    if _is_ensemble_of_tops(classifier):
        member = classifier.get_layer("ensemble").get_layer("member_1")
        return len(transformer_blocks(classifier.get_layer("bottom"))) + len(transformer_blocks(member))
    from core.model.backbone import find_backbone

    return len(transformer_blocks(find_backbone(classifier)))


def stored_part(classifier, frozen_blocks: int) -> tuple[keras.Model, bool]:
    """The part of a saved classifier that runs on stored features taken after its `frozen_blocks` bottom
    blocks, and whether it takes token-level states ({"hidden", "padding_mask"}; else the pooled embedding,
    when `frozen_blocks` is the encoder's depth). A single model: its head alone, or `build_top` of its
    backbone above `frozen_blocks`. An ensemble of tops: its `ensemble` part, preceded by the shared bottom's
    blocks from `frozen_blocks` on when the features were taken below the first block its members trained.
    Raises `ValueError` when `frozen_blocks` is above that block (the features would hold the output of a
    block the ensemble trained)."""
    if not _is_ensemble_of_tops(classifier):
        from core.model.backbone import find_backbone

        head, backbone = classifier.get_layer("head"), find_backbone(classifier)
        if frozen_blocks >= len(transformer_blocks(backbone)):
            return head, False
        return build_top(backbone, head, frozen_blocks), True
    ensemble, bottom = classifier.get_layer("ensemble"), classifier.get_layer("bottom")
    shared = transformer_blocks(bottom)
    if frozen_blocks > len(shared):
        raise ValueError(f"features taken after {frozen_blocks} frozen blocks hold the output of blocks the "
                         f"ensemble trained (its members train from block {len(shared)})")
    if frozen_blocks == len(shared):
        return ensemble, True
    return _shared_blocks_then(bottom, frozen_blocks, ensemble, "top"), True


def _shared_blocks_then(bottom: keras.Model, frozen_blocks: int, part: keras.Model, name: str) -> keras.Model:
    """{"hidden", "padding_mask"} -> `part`, after the shared bottom's blocks from `frozen_blocks` on."""
    hidden = keras.Input(shape=(None, bottom.output.shape[-1]), name="hidden")
    mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
    x = run_blocks(bottom, transformer_blocks(bottom)[frozen_blocks:], hidden, mask)
    return keras.Model({"hidden": hidden, "padding_mask": mask}, part({"hidden": x, "padding_mask": mask}), name=name)


def members_of(classifier, frozen_blocks: int) -> list[keras.Model]:
    """Each member of a saved ensemble as its own part on stored features taken after `frozen_blocks` blocks
    (the layout `stored_part` takes): for checking the ensemble against its members and scoring them one by one."""
    if _is_ensemble_of_tops(classifier):
        ensemble, bottom = classifier.get_layer("ensemble"), classifier.get_layer("bottom")
        members = [layer for layer in ensemble.layers if layer.name.startswith("member_")]
        if frozen_blocks == len(transformer_blocks(bottom)):
            return members
        return [_shared_blocks_then(bottom, frozen_blocks, member, member.name) for member in members]
    from core.model.backbone import find_backbone

    head, backbone = classifier.get_layer("head"), find_backbone(classifier)
    heads = [layer for layer in head.layers if layer.name.startswith("member_")] or [head]
    if frozen_blocks >= len(transformer_blocks(backbone)):
        return heads
    return [build_top(backbone, h, frozen_blocks, name=h.name) for h in heads]
