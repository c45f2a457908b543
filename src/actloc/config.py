"""config.yaml entries as the settings of `actloc` commands (imported by the Snakefile, so no torch)."""


def method_settings(config, dataset, method):
    """`actloc train --settings` from config.yaml: the method's type and adapter settings, the
    dataset's head, and the dataset's training settings overridden by the method's."""
    entry, data_entry = config["methods"][method], config["datasets"][dataset]
    return {"method": entry["type"], "head": data_entry.get("head", {}), "losa": entry.get("losa", {}),
            "train": {**data_entry.get("train", {}), **entry.get("train", {})}}
