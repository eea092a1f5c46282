"""NegLabel for oodfilter: OOD scores from ID class names against mined negative labels."""

from oodfilter_neglabel.mining import mine_negatives
from oodfilter_neglabel.scorer import NegLabel, neglabel_scores
from oodfilter_neglabel.vocabulary import load_vocabulary

__all__ = ["NegLabel", "load_vocabulary", "mine_negatives", "neglabel_scores"]
