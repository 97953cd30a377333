"""Take a dataset out of detectron2's catalogs, so that registering its name again replaces it.

Every registration of this package (the builtin splits, the synthetic shapes, ``DATASETS.CUSTOM``)
goes through :func:`unregister` first: a config loaded twice, or loaded again with another path
or spec, then replaces what the name meant instead of failing.
"""
from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["unregister"]


def unregister(name: str) -> None:
    """Remove ``name`` from ``DatasetCatalog`` and ``MetadataCatalog``, where it is present.

    Both are needed: ``DatasetCatalog.register`` refuses a name it has, and ``MetadataCatalog``
    keeps the old values (setting a key to another value raises).
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
