# One page per dataset and method to look at its detections on the decoded videos (linked, not
# copied): `snakemake views` writes every target dataset's.
rule view:
    input:
        detections="results/{ds}/{method}/detections.json",
        annotations=lambda wildcards: (
            [] if wildcards.ds in DETECT_DATASETS else "results/{ds}/annotations.json"
        ),
        decoded=lambda wildcards: decoded_index(wildcards),
    output:
        "results/{ds}/{method}/view.html",
    log:
        "results/{ds}/logs/view/{method}.log",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    params:
        folder=view_videos_folder,
        args=view_args,
    shell:
        "actloc view --detections {input.detections:q} --videos {params.folder:q} {params.args}"
        " --title '{wildcards.ds}: {wildcards.method}' --out {output:q} 2> {log:q}"


rule views:
    input:
        [
            f"results/{ds}/{method}/view.html"
            for ds in config["targets"]
            for method in config["datasets"][ds]["methods"]
        ],
