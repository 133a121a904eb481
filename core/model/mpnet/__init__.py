"""MPNet (Song et al. 2020, arXiv:2004.09297) in keras-hub's shape: `MPNetBackbone`, `MPNetTokenizer`, and a
loader from a Hugging Face folder (`load_backbone`, `load_tokenizer`). Importing it registers the layers for
`keras.saving.load_model(..., safe_mode=True)`."""

from core.model.mpnet.backbone import MPNetBackbone
from core.model.mpnet.layers import MPNetEncoderLayer, PaddingOffsetPositionEmbedding, RelativePositionBias
from core.model.mpnet.loader import load_backbone, load_tokenizer
from core.model.mpnet.tokenizer import MPNetTokenizer

__all__ = ["MPNetBackbone", "MPNetEncoderLayer", "MPNetTokenizer", "PaddingOffsetPositionEmbedding",
           "RelativePositionBias", "load_backbone", "load_tokenizer"]
