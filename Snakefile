from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


# Seconds of bookkeeping each: on a cluster they run where Snakemake runs, not as jobs.
localrules:
    all,
    annotations,
    decode_index,
    cache_index,
    detect_index,
    view,
    views,
    evaluate,
    report,
    plots,


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo_data.smk"
include: "workflow/rules/annotations.smk"
include: "workflow/rules/decode.smk"
include: "workflow/rules/backbone.smk"
include: "workflow/rules/cache.smk"
include: "workflow/rules/lofi.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/view.smk"


rule all:
    default_target: True
    input:
        [path for ds in config["targets"] for path in target_files(ds)],
