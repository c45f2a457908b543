rule demo_data:
    output:
        "results/{ds}/source/{video}.mp4",
    log:
        "results/{ds}/logs/demo_data/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/demo_data/{video}.tsv"
    wildcard_constraints:
        ds="|".join(DEMO_DATASETS) or "no-demo-dataset",
    conda:
        "../../envs/actloc.yaml"
    params:
        settings=demo_args,
    shell:
        "actloc demo-data --out-dir results/{wildcards.ds}/source --video {wildcards.video:q}"
        " {params.settings} 2> {log:q}"
