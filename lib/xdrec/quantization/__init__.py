"""Codebooks shared by the tokenizers of GenCDR, TIGER, LETTER and UTGRec: residual quantisation,
the RQ-VAE and its training (:func:`train_rqvae`), semantic IDs from codes (collisions, statistics)."""
from .residual import QuantizerOutput, ResidualQuantizer, codes_and_residuals, kmeans
from .rqvae import RQVAE, RQVAEOutput, mlp
from .semantic_ids import (COLLISION_RULES, collision_groups, id_statistics, read_semantic_ids, resolve_collisions,
                           semantic_ids_of, write_semantic_ids)
from .training import train_rqvae

__all__ = ["QuantizerOutput", "ResidualQuantizer", "codes_and_residuals", "kmeans", "RQVAE", "RQVAEOutput", "mlp",
           "COLLISION_RULES", "collision_groups", "id_statistics", "read_semantic_ids", "resolve_collisions",
           "semantic_ids_of", "train_rqvae", "write_semantic_ids"]
