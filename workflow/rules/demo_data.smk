rule demo_data:
    input:
        # Only for the chunk's members (a checkpoint's output must be an input of what reads it);
        # ancient: a change elsewhere in the dataset reruns no chunk but its own.
        ancient("results/{ds}/annotations.json"),
    output:
        "results/{ds}/source/chunks/{chunk}.json",
    log:
        "results/{ds}/logs/demo_data/{chunk}.log",
    benchmark:
        "results/{ds}/benchmarks/demo_data/{chunk}.tsv"
    wildcard_constraints:
        ds="|".join(DEMO_DATASETS) or "no-demo-dataset",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(1000),
        runtime=chunk_runtime(0.2),
    params:
        videos=chunk_videos,
        # What a video's pixels depend on: growing n_train or n_test re-renders nothing.
        settings=lambda wildcards: demo_args(
            wildcards, ("seed", "min_seconds", "max_seconds")
        ),
    shell:
        "actloc demo-data --out-dir results/{wildcards.ds}/source --video {params.videos:q}"
        " {params.settings} --jobs {threads} --manifest {output:q} 2> {log:q}"
