rule report:
    input:
        maps=per_method("map.csv"),
        per_class=per_method("per_class.csv"),
        summaries=per_method("train.json"),
        stage_a=lambda wildcards: stage_a_summaries(wildcards).values(),
    output:
        csv=report(
            "results/{ds}/map.csv",
            caption="../report/map.rst",
            category="{ds}",
            labels={"figure": "mAP table"},
        ),
        md="results/{ds}/map.md",
        per_class=report(
            "results/{ds}/per_class_ap.csv",
            caption="../report/per_class.rst",
            category="{ds}",
            labels={"figure": "per-class AP table"},
        ),
        # The dataset's section of the report's first page (workflow/report/workflow.rst).
        rst="results/{ds}/report.rst",
    log:
        "results/{ds}/logs/report.log",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    params:
        methods=methods_of,
        stage_a=stage_a_args,
        protocol=lambda wildcards: evaluation_protocol(dataset(wildcards)),
    shell:
        "actloc report --methods {params.methods} --maps {input.maps:q} --summaries {input.summaries:q}"
        " --per-class {input.per_class:q} {params.stage_a} --protocol {params.protocol:q} --name {wildcards.ds:q}"
        " --out-csv {output.csv:q} --out-md {output.md:q} --out-per-class {output.per_class:q}"
        " --out-rst {output.rst:q} > {log:q} 2>&1"
