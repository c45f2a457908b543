from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/demo_data.smk"
include: "workflow/rules/annotations.smk"
include: "workflow/rules/decode.smk"
include: "workflow/rules/backbone.smk"
include: "workflow/rules/cache.smk"


rule all:
    default_target: True
    input:
        [
            f"results/{ds}/cache/{config['datasets'][ds]['backbone']}.json"
            for ds in config["targets"]
        ],
