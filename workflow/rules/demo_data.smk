rule demo_data:
    output:
        "results/{ds}/source/{video}.mp4",
    log:
        "results/{ds}/logs/demo_data/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/demo_data/{video}.tsv"
    wildcard_constraints:
        ds="|".join(DEMO_DATASETS) or "no-demo-dataset",
    group:
        "videos"
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(1000),
        runtime=10,
    params:
        # What a video's pixels depend on: growing n_train or n_test re-renders nothing.
        settings=lambda wildcards: demo_args(
            wildcards, ("seed", "min_seconds", "max_seconds")
        ),
    shell:
        "actloc demo-data --out-dir results/{wildcards.ds}/source --video {wildcards.video:q}"
        " {params.settings} 2> {log:q}"
