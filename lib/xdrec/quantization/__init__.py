"""Codebooks shared by the tokenizers of GenCDR, TIGER, LETTER and UTGRec."""
from .residual import QuantizerOutput, ResidualQuantizer, kmeans
from .rqvae import RQVAE, RQVAEOutput, mlp
from .semantic_ids import COLLISION_RULES, collision_groups, id_statistics, resolve_collisions

__all__ = ["QuantizerOutput", "ResidualQuantizer", "kmeans", "RQVAE", "RQVAEOutput", "mlp",
           "COLLISION_RULES", "collision_groups", "id_statistics", "resolve_collisions"]
