"""config.yaml entries as the settings of `actloc` commands (imported by the Snakefile, so no torch)."""


def method_settings(config, dataset, method):
    """`actloc train --settings` from config.yaml: the method's type and adapter settings, the
    dataset's head, and the dataset's training settings overridden by the method's. A LoFi
    method's head trains on its tuned backbone's cache exactly as head_only (stage B)."""
    entry, data_entry = config["methods"][method], config["datasets"][dataset]
    return {"method": "head_only" if entry["type"] == "lofi" else entry["type"], "head": data_entry.get("head", {}),
            "losa": entry.get("losa", {}), "train": {**data_entry.get("train", {}), **entry.get("train", {})}}


def lofi_settings(config, dataset, method):
    """`actloc train --settings` of a LoFi method's stage A: its `lofi` entry (the dataset's snippet
    protocol filled in) and training settings: the dataset's, overridden by the method's, then
    by the `lofi.train` ones."""
    entry, data_entry = config["methods"][method], config["datasets"][dataset]
    lofi = dict(entry.get("lofi", {}))
    snippets = data_entry.get("snippets", {})
    return {"method": "lofi", "head": data_entry.get("head", {}),
            "lofi": {key: value for key, value in lofi.items() if key != "train"}
            | {"snippet_frames": snippets.get("frames", 16), "stride": snippets.get("stride", 4)},
            "train": {**data_entry.get("train", {}), **entry.get("train", {}), **lofi.get("train", {})}}
