//! The AWS deployment files (deploy/aws/): the SAM template passes cfn-lint and says what the
//! Lambda function needs (the CodeCommit event rule spelled as EventBridge spells it, one sync
//! at a time, the failed-sync queue, the classic environment, a private state bucket, a role
//! that may touch only that bucket and the passwords' secret), and the Dockerfile's text
//! declares a provided.al2023 runtime stage with git and ferry as its bootstrap. The fleet
//! template passes cfn-lint too, matches every repository's events, and the `FERRY_CONFIG` it
//! assembles from sample parameters is a fleet that ferry discovers against the fake CodeCommit
//! and the fake GitHub. No AWS account or Docker engine is involved: the image is never built
//! here.

use crate::harness::{servers, Ferry};
use ferry_testkit::codecommit::{CodeCommitFake, FakeOptions, RepoSpec};
use ferry_testkit::github::{FakeOptions as GitHubOptions, GitHubFake};
use ferry_testkit::WRITER;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALL_CFN_LINT: &str = "install cfn-lint: scripts/test.sh does it";

/// The variables the classic function read, and the parameter each comes from.
const CLASSIC_ENVIRONMENT: [(&str, &str); 6] = [
    ("SRC_REPO", "SourceCodeCommitRepoCloneUrl"),
    ("SRC_USER", "SourceGitUsername"),
    ("SRC_PASS", "SourceGitPassword"),
    ("DEST_REPO", "DestinationRepoUrl"),
    ("DEST_USER", "DestinationGitUsername"),
    ("DEST_PASS", "DestinationGitPassword"),
];

fn aws_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/aws")
}

fn template_path() -> PathBuf {
    aws_dir().join("template.yaml")
}

fn fleet_template_path() -> PathBuf {
    aws_dir().join("fleet-template.yaml")
}

/// Runs a program that comes from cfn-lint's installation; fails the test when it is missing.
fn run(program: &str, args: &[&str]) -> Output {
    match Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{program} not found: {INSTALL_CFN_LINT}")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn template() -> Value {
    decode(&template_path())
}

fn fleet_template() -> Value {
    decode(&fleet_template_path())
}

/// A template as JSON, read by cfn-lint's own YAML loader (it understands the short
/// intrinsic tags: `!Ref X` becomes `{"Ref": "X"}`, `!Sub` becomes `{"Fn::Sub": ...}`).
fn decode(path: &Path) -> Value {
    const DECODE: &str = "import json, sys\n\
        from cfnlint.decode import decode\n\
        t, matches = decode(sys.argv[1])\n\
        if t is None or matches:\n    \
            sys.exit('cannot read the template: ' + '; '.join(str(m) for m in matches))\n\
        print(json.dumps(t, default=str))\n";
    let out = run("python3", &["-c", DECODE, path.to_str().unwrap()]);
    let text = output_text(&out);
    if text.contains("No module named 'cfnlint'") {
        panic!("python3 has no cfnlint module: {INSTALL_CFN_LINT}");
    }
    assert!(
        out.status.success(),
        "decoding the template failed:\n{text}"
    );
    serde_json::from_slice(&out.stdout).expect("the decoder prints JSON")
}

fn object<'a>(v: &'a Value, what: &str) -> &'a Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what} is not a mapping: {v}"))
}

fn keys(v: &Value, what: &str) -> BTreeSet<String> {
    object(v, what).keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The strings of a list, sorted.
fn strings(v: &Value, what: &str) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{what} holds a non-string: {s}"))
                .to_string()
        })
        .collect()
}

/// The one resource of the given type: (logical id, resource).
fn only_resource<'a>(t: &'a Value, kind: &str) -> (&'a str, &'a Value) {
    let found: Vec<_> = object(&t["Resources"], "Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}: {found:?}");
    (found[0].0.as_str(), found[0].1)
}

/// The events of the given SAM type on the function.
fn events<'a>(function: &'a Value, kind: &str) -> Vec<&'a Value> {
    object(&function["Properties"]["Events"], "Events")
        .values()
        .filter(|e| e["Type"] == kind)
        .collect()
}

/// The resource a `!GetAtt X.Arn` names, with its logical id.
fn arn_target<'a>(t: &'a Value, v: &Value) -> (String, &'a Value) {
    let target = match &v["Fn::GetAtt"] {
        Value::Array(a) if a.len() == 2 && a[1] == "Arn" => a[0].as_str().unwrap().to_string(),
        Value::String(s) if s.ends_with(".Arn") => s.trim_end_matches(".Arn").to_string(),
        _ => panic!("expected !GetAtt RESOURCE.Arn, got {v}"),
    };
    let resource = &t["Resources"][&target];
    assert!(
        resource.is_object(),
        "{target} is not a resource of the template"
    );
    (target, resource)
}

fn assert_is_parameter(t: &Value, name: &str) {
    assert!(
        t["Parameters"][name].is_object(),
        "{name} is not a parameter of the template"
    );
}

fn assert_cfn_lint_passes(path: &Path) {
    let out = run("cfn-lint", &[path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "cfn-lint {} failed ({}):\n{}",
        path.display(),
        out.status,
        output_text(&out)
    );
}

#[test]
fn cfn_lint_passes_on_the_template() {
    assert_cfn_lint_passes(&template_path());
}

#[test]
fn cfn_lint_passes_on_the_fleet_template() {
    assert_cfn_lint_passes(&fleet_template_path());
}

#[test]
fn the_event_rule_matches_codecommit_reference_events() {
    let t = template();
    let (_, function) = only_resource(&t, "AWS::Serverless::Function");
    let props = &function["Properties"];

    // The rule: cfn-lint accepts any keys in a pattern, and EventBridge accepts a rule whose
    // keys match nothing, so a misspelling here would only show as a mirror that never syncs.
    let rules = events(function, "EventBridgeRule");
    assert_eq!(rules.len(), 1, "expected one EventBridgeRule event");
    let pattern = &rules[0]["Properties"]["Pattern"];
    assert_eq!(
        keys(pattern, "Pattern"),
        set(&["source", "detail-type", "resources", "detail"]),
        "pattern keys"
    );
    assert_eq!(pattern["source"], json!(["aws.codecommit"]));
    assert_eq!(
        pattern["detail-type"],
        json!(["CodeCommit Repository State Change"])
    );
    let resources = pattern["resources"]
        .as_array()
        .expect("resources is a list");
    assert_eq!(resources.len(), 1, "one repository: {resources:?}");
    let arn = resources[0]["Fn::Sub"]
        .as_str()
        .unwrap_or_else(|| panic!("the repository ARN is a !Sub string: {}", resources[0]));
    assert!(
        arn.starts_with("arn:${AWS::Partition}:codecommit:${AWS::Region}:${AWS::AccountId}:")
            && arn.ends_with(":${SourceCodeCommitRepoName}"),
        "repository ARN: {arn}"
    );
    let detail = &pattern["detail"];
    assert_eq!(
        keys(detail, "detail"),
        set(&["repositoryName", "event"]),
        "detail keys"
    );
    assert_eq!(
        detail["repositoryName"],
        json!([{ "Ref": "SourceCodeCommitRepoName" }])
    );
    assert_eq!(
        strings(&detail["event"], "detail.event"),
        set(&["referenceCreated", "referenceUpdated", "referenceDeleted"]),
        "only reference changes"
    );
    assert_is_parameter(&t, "SourceCodeCommitRepoName");

    // The scheduled reconcile.
    let schedules = events(function, "Schedule");
    assert_eq!(schedules.len(), 1, "expected one Schedule event");
    assert_eq!(
        schedules[0]["Properties"]["Schedule"],
        json!({ "Ref": "ReconcileSchedule" })
    );
    assert_eq!(
        t["Parameters"]["ReconcileSchedule"]["Default"],
        "rate(1 hour)"
    );

    // The function: an image, one sync at a time, Lambda's longest timeout.
    assert_eq!(props["PackageType"], "Image");
    assert_eq!(props["ReservedConcurrentExecutions"], 1);
    assert_eq!(props["Timeout"], 900);
    assert_eq!(
        props["EphemeralStorage"]["Size"],
        json!({ "Ref": "EphemeralStorageSize" })
    );
    let metadata = &function["Metadata"];
    let context = aws_dir().join(metadata["DockerContext"].as_str().expect("DockerContext"));
    let dockerfile = context.join(metadata["Dockerfile"].as_str().expect("Dockerfile"));
    assert!(
        dockerfile.is_file() && context.join("Cargo.lock").is_file(),
        "the Docker context must be the repository root and the Dockerfile in it: {}",
        dockerfile.display()
    );

    // Failed asynchronous invocations land in an SQS queue after Lambda's retries.
    let invoke = &props["EventInvokeConfig"];
    assert_eq!(invoke["MaximumRetryAttempts"], 2);
    let on_failure = &invoke["DestinationConfig"]["OnFailure"];
    assert_eq!(on_failure["Type"], "SQS");
    let (queue, resource) = arn_target(&t, &on_failure["Destination"]);
    assert_eq!(resource["Type"], "AWS::SQS::Queue");
    assert!(
        object(&t["Outputs"], "Outputs")
            .values()
            .any(|o| o["Value"] == json!({ "Ref": queue })),
        "an output gives the URL of {queue}"
    );

    // The classic environment, each variable from the classic parameter; with a Secrets
    // Manager secret, the passwords are left out and ferry is given the secret's ARN and key
    // instead (it reads them at run time).
    let env = &props["Environment"]["Variables"];
    let no_value = json!({ "Ref": "AWS::NoValue" });
    for (var, parameter) in CLASSIC_ENVIRONMENT {
        assert_is_parameter(&t, parameter);
        let plain = json!({ "Ref": parameter });
        let value = &env[var];
        if var.ends_with("_PASS") {
            assert_eq!(t["Parameters"][parameter]["NoEcho"], true, "{parameter}");
            let (password, secret) = if var == "SRC_PASS" {
                ("FERRY_SOURCE_PASSWORD_SECRET", "source_password")
            } else {
                ("FERRY_DEST_PASSWORD_SECRET", "destination_password")
            };
            assert_eq!(
                if_on_the_secret(&t, value, var),
                [&no_value, &plain],
                "{var}: the parameter, unless the secret is set"
            );
            let reference = json!({ "Fn::Sub": format!("${{PasswordsSecretArn}}#{secret}") });
            assert_eq!(
                if_on_the_secret(&t, &env[password], password),
                [&reference, &no_value],
                "{password}: the secret's {secret}, when the secret is set"
            );
        } else {
            assert_eq!(value, &plain, "{var}");
        }
    }
    assert_is_parameter(&t, "PasswordsSecretArn");
    let text = std::fs::read_to_string(template_path()).expect("the template");
    assert!(
        !text.contains("resolve:secretsmanager"),
        "no password is resolved into the function's configuration"
    );

    // ferry's policies, with ferry's vocabulary.
    assert_eq!(
        env["FERRY_DIVERGENCE"],
        json!({ "Ref": "DivergencePolicy" })
    );
    assert_eq!(env["FERRY_PRUNE"], json!({ "Ref": "PrunePolicy" }));
    assert_eq!(
        strings(
            &t["Parameters"]["DivergencePolicy"]["AllowedValues"],
            "DivergencePolicy"
        ),
        set(&["keep", "overwrite", "abort"])
    );
    assert_eq!(
        strings(
            &t["Parameters"]["PrunePolicy"]["AllowedValues"],
            "PrunePolicy"
        ),
        set(&["synced", "all", "never"])
    );
    assert_eq!(t["Parameters"]["DivergencePolicy"]["Default"], "keep");
    assert_eq!(t["Parameters"]["PrunePolicy"]["Default"], "synced");
}

/// The (then, else) branches of an `!If` on the condition "PasswordsSecretArn is set".
fn if_on_the_secret<'a>(t: &Value, value: &'a Value, what: &str) -> [&'a Value; 2] {
    let branches = value["Fn::If"]
        .as_array()
        .unwrap_or_else(|| panic!("{what} is an !If on the secret: {value}"));
    assert_eq!(branches.len(), 3, "{what}: {value}");
    let condition = branches[0].as_str().expect("condition name");
    assert_eq!(
        t["Conditions"][condition],
        json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "PasswordsSecretArn" }, ""] }] }),
        "{what}: the condition is that PasswordsSecretArn is set"
    );
    [&branches[1], &branches[2]]
}

/// A policy statement's actions, whether one string or a list.
fn actions(statement: &Value) -> BTreeSet<String> {
    match &statement["Action"] {
        Value::String(a) => set(&[a]),
        list => strings(list, "Action"),
    }
}

/// The role's grants beyond SAM's own (logs, the failed-sync queue): (action, resource,
/// condition) of inline statements only, no managed policies or SAM policy templates.
fn grants(props: &Value) -> BTreeSet<(String, String, String)> {
    let policies = props["Policies"]
        .as_array()
        .unwrap_or_else(|| panic!("Policies is a list: {}", props["Policies"]));
    let mut grants = BTreeSet::new();
    for policy in policies {
        let statements = policy["Statement"]
            .as_array()
            .unwrap_or_else(|| panic!("only inline policy documents: {policy}"));
        for statement in statements {
            let (condition, statement) = match statement["Fn::If"].as_array() {
                Some(branches) => {
                    assert_eq!(branches.len(), 3, "{statement}");
                    assert_eq!(branches[2], json!({ "Ref": "AWS::NoValue" }), "{statement}");
                    (branches[0].as_str().unwrap_or("").to_owned(), &branches[1])
                }
                None => (String::new(), statement),
            };
            assert_eq!(statement["Effect"], "Allow", "{statement}");
            for action in actions(statement) {
                grants.insert((action, statement["Resource"].to_string(), condition.clone()));
            }
        }
    }
    grants
}

#[test]
fn the_state_bucket_is_private_and_the_role_may_touch_only_it_and_the_secret() {
    let t = template();
    let (_, function) = only_resource(&t, "AWS::Serverless::Function");
    let props = &function["Properties"];
    let (bucket_id, bucket) = only_resource(&t, "AWS::S3::Bucket");
    assert_eq!(
        props["Environment"]["Variables"]["FERRY_STATE_BUCKET"],
        json!({ "Ref": bucket_id }),
        "the function is told the bucket"
    );

    // Private, encrypted, versioned.
    let bucket_props = &bucket["Properties"];
    let block = &bucket_props["PublicAccessBlockConfiguration"];
    for key in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[key], true, "public access blocked: {key}");
    }
    let encryption = &bucket_props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        ["ServerSideEncryptionByDefault"]["SSEAlgorithm"];
    assert!(
        ["AES256", "aws:kms", "aws:kms:dsse"].contains(&encryption.as_str().unwrap_or("")),
        "encrypted at rest: {encryption}"
    );
    assert_eq!(
        bucket_props["VersioningConfiguration"]["Status"], "Enabled",
        "versioned"
    );
    assert_eq!(bucket["DeletionPolicy"], "Retain", "outlives the stack");
    let (_, bucket_policy) = only_resource(&t, "AWS::S3::BucketPolicy");
    assert_eq!(
        bucket_policy["Properties"]["Bucket"],
        json!({ "Ref": bucket_id })
    );
    assert!(
        bucket_policy["Properties"]["PolicyDocument"]["Statement"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["Effect"] == "Deny"
                && s["Condition"]["Bool"]["aws:SecureTransport"] == "false")),
        "the bucket refuses requests without TLS"
    );

    // The role's grants beyond SAM's own (logs, the failed-sync queue), exactly these.
    let grants = grants(props);
    let objects = json!({ "Fn::Sub": format!("${{{bucket_id}.Arn}}/*") }).to_string();
    let the_bucket = json!({ "Fn::GetAtt": [bucket_id, "Arn"] }).to_string();
    let secret = json!({ "Ref": "PasswordsSecretArn" }).to_string();
    let when_secret = t["Conditions"]
        .as_object()
        .and_then(|c| {
            c.iter().find(|(_, v)| {
                **v == json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "PasswordsSecretArn" }, ""] }] })
            })
        })
        .map(|(name, _)| name.clone())
        .expect("a condition: PasswordsSecretArn is set");
    let want: BTreeSet<(String, String, String)> = [
        ("s3:GetObject", &objects, ""),
        ("s3:PutObject", &objects, ""),
        ("s3:ListBucket", &the_bucket, ""),
        (
            "secretsmanager:GetSecretValue",
            &secret,
            when_secret.as_str(),
        ),
    ]
    .into_iter()
    .map(|(a, r, c)| (a.to_owned(), r.clone(), c.to_owned()))
    .collect();
    assert_eq!(grants, want, "the role's grants");
}

#[test]
fn the_dockerfile_text_declares_a_provided_al2023_stage_with_git_and_the_bootstrap() {
    let text = std::fs::read_to_string(aws_dir().join("Dockerfile")).expect("Dockerfile");
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = instructions
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    assert_eq!(
        froms.last().unwrap().trim(),
        "FROM public.ecr.aws/lambda/provided:al2023",
        "the runtime stage is Lambda's OS-only AL2023 image"
    );
    let build_stage = froms[0]
        .split_whitespace()
        .nth(3)
        .expect("the build stage is named: FROM IMAGE AS NAME");
    assert!(
        text.contains("cargo build --release --locked --bin ferry"),
        "builds the ferry binary from the locked workspace"
    );
    assert!(
        text.contains("dnf install -y git-core"),
        "installs git in the runtime image"
    );
    assert!(
        instructions.iter().any(|l| l.starts_with(&format!(
            "COPY --from={build_stage} /src/target/release/ferry ${{LAMBDA_RUNTIME_DIR}}/bootstrap"
        ))),
        "copies the binary to Lambda's bootstrap"
    );
    assert!(
        instructions.iter().any(|l| l.starts_with("CMD ")),
        "a handler name (unused, but part of the image's configuration)"
    );

    // The context is the repository root: its .dockerignore keeps build output out.
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))
            .expect(".dockerignore at the repository root");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore leaves target/ out"
    );
}

#[test]
fn the_deploy_readme_explains_every_parameter_of_both_templates() {
    let readme =
        std::fs::read_to_string(aws_dir().join("README.md")).expect("deploy/aws/README.md");
    let (t, fleet) = (template(), fleet_template());
    let missing: Vec<&String> = object(&t["Parameters"], "Parameters")
        .keys()
        .chain(object(&fleet["Parameters"], "Parameters").keys())
        .filter(|p| !readme.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/aws/README.md does not explain {missing:?}"
    );
}

// --- The fleet template ---------------------------------------------------------------------

#[test]
fn the_fleet_template_matches_every_repositorys_reference_events_one_invocation_at_a_time() {
    let (single, t) = (template(), fleet_template());
    let (_, function) = only_resource(&t, "AWS::Serverless::Function");
    let props = &function["Properties"];

    // Every repository of the account: no resources or repositoryName filter.
    let rules = events(function, "EventBridgeRule");
    assert_eq!(rules.len(), 1, "expected one EventBridgeRule event");
    let pattern = &rules[0]["Properties"]["Pattern"];
    assert_eq!(
        keys(pattern, "Pattern"),
        set(&["source", "detail-type", "detail"]),
        "pattern keys"
    );
    assert_eq!(pattern["source"], json!(["aws.codecommit"]));
    assert_eq!(
        pattern["detail-type"],
        json!(["CodeCommit Repository State Change"])
    );
    assert_eq!(keys(&pattern["detail"], "detail"), set(&["event"]));
    assert_eq!(
        strings(&pattern["detail"]["event"], "detail.event"),
        set(&["referenceCreated", "referenceUpdated", "referenceDeleted"]),
        "only reference changes"
    );
    let schedules = events(function, "Schedule");
    assert_eq!(schedules.len(), 1, "expected one Schedule event");
    assert_eq!(
        schedules[0]["Properties"]["Schedule"],
        json!({ "Ref": "ReconcileSchedule" })
    );

    // Discoveries must never race: one invocation at a time.
    assert_eq!(props["ReservedConcurrentExecutions"], 1);
    assert_eq!(props["PackageType"], "Image");
    assert_eq!(props["Timeout"], 900);
    assert_eq!(props["MemorySize"], json!({ "Ref": "MemorySize" }));
    assert_eq!(
        props["EphemeralStorage"]["Size"],
        json!({ "Ref": "EphemeralStorageSize" })
    );
    let (_, single_function) = only_resource(&single, "AWS::Serverless::Function");
    assert_eq!(
        function["Metadata"], single_function["Metadata"],
        "the same image as template.yaml's"
    );
    assert_eq!(
        props["EventInvokeConfig"], single_function["Properties"]["EventInvokeConfig"],
        "the same retries and failed-sync queue as template.yaml"
    );
    let (_, queue) = arn_target(
        &t,
        &props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"],
    );
    assert_eq!(queue["Type"], "AWS::SQS::Queue");
}

#[test]
fn the_fleet_templates_bucket_is_hardened_and_its_role_may_list_codecommit_and_touch_only_the_bucket(
) {
    let (single, t) = (template(), fleet_template());
    for kind in ["AWS::S3::Bucket", "AWS::S3::BucketPolicy"] {
        assert_eq!(
            only_resource(&t, kind),
            only_resource(&single, kind),
            "{kind}: the same as template.yaml's"
        );
    }
    let (bucket_id, _) = only_resource(&t, "AWS::S3::Bucket");
    let (_, function) = only_resource(&t, "AWS::Serverless::Function");
    let props = &function["Properties"];
    assert_eq!(
        props["Environment"]["Variables"]["FERRY_STATE_BUCKET"],
        json!({ "Ref": bucket_id })
    );
    let objects = json!({ "Fn::Sub": format!("${{{bucket_id}.Arn}}/*") }).to_string();
    let the_bucket = json!({ "Fn::GetAtt": [bucket_id, "Arn"] }).to_string();
    let account = json!({
        "Fn::Sub": "arn:${AWS::Partition}:codecommit:${AWS::Region}:${AWS::AccountId}:*"
    })
    .to_string();
    let any = json!("*").to_string();
    let want: BTreeSet<(String, String, String)> = [
        ("s3:GetObject", &objects),
        ("s3:PutObject", &objects),
        ("s3:ListBucket", &the_bucket),
        ("codecommit:ListRepositories", &any),
        ("codecommit:BatchGetRepositories", &account),
        ("codecommit:GetRepository", &account),
    ]
    .into_iter()
    .map(|(a, r)| (a.to_owned(), r.clone(), String::new()))
    .collect();
    assert_eq!(grants(props), want, "the role's grants");
}

/// Sample parameter values for the fleet template, against the fakes.
fn fleet_parameters(cc: &CodeCommitFake, gh: &GitHubFake) -> BTreeMap<String, String> {
    let defaults = fleet_template()["Parameters"]
        .as_object()
        .expect("Parameters")
        .iter()
        .filter_map(|(k, p)| Some((k.clone(), scalar(&p["Default"])?)))
        .collect::<BTreeMap<_, _>>();
    let given = [
        ("AWS::Region", cc.region()),
        ("AWS::Partition", "aws"),
        ("AWS::AccountId", cc.account_id()),
        ("StateBucket", "ferry-state-sample"),
        ("FleetName", "cc"),
        ("IncludeRepositories", "app*,lib"),
        ("ExcludeRepositories", "*-legacy"),
        ("OnSourceDeleted", "archive"),
        ("CodeCommitGitUsername", cc.git_credentials().0),
        ("CodeCommitGitPassword", cc.git_credentials().1),
        ("DestinationProvider", "github"),
        ("DestinationOwner", "acme-mirror"),
        ("DestinationApiUrl", gh.base_url()),
        ("DestinationToken", WRITER.1),
    ];
    defaults
        .into_iter()
        .chain(given.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What CloudFormation makes of a template's value given the stack's parameters (and pseudo
/// parameters and resource ids): the intrinsic functions the templates use. `None` is
/// `AWS::NoValue`. An intrinsic it does not know fails the test rather than pass unresolved.
struct Stack<'a> {
    template: &'a Value,
    values: &'a BTreeMap<String, String>,
}

impl Stack<'_> {
    fn resolve(&self, v: &Value) -> Option<Value> {
        let Some(map) = v.as_object().filter(|m| m.len() == 1) else {
            return Some(match v {
                Value::Array(items) => items.iter().filter_map(|i| self.resolve(i)).collect(),
                other => other.clone(),
            });
        };
        let (function, arg) = map.iter().next().expect("one key");
        let text = |v: &Value| -> String {
            self.resolve(v)
                .and_then(|v| scalar(&v))
                .unwrap_or_else(|| panic!("{function}: not a string: {v}"))
        };
        let list = |v: &Value| -> Vec<Value> {
            match self.resolve(v) {
                Some(Value::Array(items)) => items,
                other => panic!("{function}: not a list: {other:?}"),
            }
        };
        Some(match function.as_str() {
            "Ref" if arg == "AWS::NoValue" => return None,
            "Ref" => json!(self.value(arg.as_str().expect("Ref names a string"))),
            "Fn::If" => {
                let branches = arg.as_array().expect("Fn::If is a list");
                let chosen = if self.condition(&branches[0]) {
                    &branches[1]
                } else {
                    &branches[2]
                };
                return self.resolve(chosen);
            }
            "Fn::Join" => {
                let a = arg.as_array().expect("Fn::Join is a list");
                let parts: Vec<String> = list(&a[1]).iter().map(text).collect();
                json!(parts.join(a[0].as_str().expect("separator")))
            }
            "Fn::Split" => {
                let a = arg.as_array().expect("Fn::Split is a list");
                let separator = a[0].as_str().expect("separator");
                json!(text(&a[1]).split(separator).collect::<Vec<_>>())
            }
            "Fn::Sub" => {
                let (pattern, variables) = match arg {
                    Value::String(s) => (s.as_str(), Map::new()),
                    Value::Array(a) => (
                        a[0].as_str().expect("Fn::Sub's string"),
                        object(&a[1], "Fn::Sub's variables").clone(),
                    ),
                    other => panic!("Fn::Sub: {other}"),
                };
                let mut out = String::new();
                let mut rest = pattern;
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let end = rest[start..].find('}').expect("${ closed") + start;
                    let name = &rest[start + 2..end];
                    out.push_str(&match variables.get(name) {
                        Some(v) => text(v),
                        None => self.value(name),
                    });
                    rest = &rest[end + 1..];
                }
                out.push_str(rest);
                json!(out)
            }
            _ => panic!("an intrinsic function the test does not resolve: {v}"),
        })
    }

    fn value(&self, name: &str) -> String {
        self.values
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no sample value for {name}"))
    }

    fn condition(&self, v: &Value) -> bool {
        if let Some(name) = v.as_str() {
            return self.condition(&self.template["Conditions"][name]);
        }
        let (function, arg) = object(v, "a condition")
            .iter()
            .next()
            .expect("a condition function");
        let args = arg.as_array().expect("a condition's arguments");
        match function.as_str() {
            "Fn::Equals" => self.resolve(&args[0]) == self.resolve(&args[1]),
            "Fn::Not" => !self.condition(&args[0]),
            "Fn::And" => args.iter().all(|c| self.condition(c)),
            "Fn::Or" => args.iter().any(|c| self.condition(c)),
            _ => panic!("a condition the test does not resolve: {v}"),
        }
    }
}

#[test]
fn the_fleet_templates_parameters_reach_ferry_config_only_as_toml_safe_values_and_secrets_only_as_variables(
) {
    let t = fleet_template();
    let (_, function) = only_resource(&t, "AWS::Serverless::Function");
    let env = object(
        &function["Properties"]["Environment"]["Variables"],
        "Variables",
    );
    let config = env["FERRY_CONFIG"].to_string();
    for (name, parameter) in object(&t["Parameters"], "Parameters") {
        let used = config.contains(&format!("${{{name}}}"))
            || config.contains(&json!({ "Ref": name }).to_string());
        if parameter["NoEcho"] == true {
            assert!(!used, "{name} is a secret: it must not be in FERRY_CONFIG");
            let holders: Vec<&String> = env
                .iter()
                .filter(|(_, v)| **v == json!({ "Ref": name }))
                .map(|(k, _)| k)
                .collect();
            assert_eq!(
                holders.len(),
                1,
                "{name}: one variable holds it: {holders:?}"
            );
            assert!(
                config.contains(&format!("_env = \\\"{}\\\"", holders[0])),
                "FERRY_CONFIG names {} (password_env or token_env)",
                holders[0]
            );
        } else if used && !parameter["AllowedValues"].is_array() {
            // CloudFormation anchors AllowedPattern at both ends (Python's fullmatch).
            let pattern = parameter["AllowedPattern"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} goes into TOML text: it needs a pattern"));
            for bad in ["a\"b", "a\\b", "a\nb"] {
                let out = run(
                    "python3",
                    &[
                        "-c",
                        "import re, sys\nsys.exit(0 if re.fullmatch(sys.argv[1], sys.argv[2]) else 1)",
                        pattern,
                        bad,
                    ],
                );
                assert!(
                    !out.status.success(),
                    "{name}'s pattern {pattern} lets {bad:?} into the TOML text"
                );
            }
        }
    }
}

#[test]
fn the_fleet_templates_ferry_config_from_sample_parameters_discovers_a_codecommit_account_for_github(
) {
    let cc = CodeCommitFake::start(servers(), FakeOptions::default())
        .expect("start the fake CodeCommit");
    for name in ["app", "app-legacy", "lib", "web"] {
        cc.add_repo(name, RepoSpec::default()).expect("add repo");
    }
    let gh =
        GitHubFake::start(servers(), GitHubOptions::new(WRITER.1)).expect("start the fake GitHub");
    gh.add_org("acme-mirror").expect("destination org");

    let t = fleet_template();
    let values = fleet_parameters(&cc, &gh);
    let stack = Stack {
        template: &t,
        values: &values,
    };
    let (_, function) = only_resource(&t, "AWS::Serverless::Function");
    let env: BTreeMap<String, String> = object(
        &function["Properties"]["Environment"]["Variables"],
        "Variables",
    )
    .iter()
    .filter_map(|(k, v)| Some((k.clone(), scalar(&stack.resolve(v)?)?)))
    .collect();
    let config = &env["FERRY_CONFIG"];
    for secret in [cc.git_credentials().1, WRITER.1] {
        assert!(
            !config.contains(secret),
            "a secret in FERRY_CONFIG:\n{config}"
        );
    }

    // The function's variables (the config names those holding the secrets) and the SDK's.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, config).expect("write the config");
    let ferry = env
        .iter()
        .filter(|(k, _)| !k.starts_with("FERRY_"))
        .chain(cc.sdk_env().iter().map(|(k, v)| (k, v)))
        .fold(Ferry::new(), |f, (k, v)| f.env(k, v));
    let run = ferry.run(
        "fleet",
        &["list", "--config", path.to_str().unwrap(), "--json"],
    );
    assert_eq!(
        run.code, 0,
        "ferry fleet list with FERRY_CONFIG:\n{config}\n{run:?}"
    );
    let fleet = &run.json[0];
    let action = |name: &str| -> &Value {
        &fleet["repositories"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == name))
            .unwrap_or_else(|| panic!("{name} not listed: {fleet:#}"))["action"]
    };
    assert_eq!(action("cc/app"), "create");
    assert_eq!(action("cc/lib"), "create");
    assert_eq!(action("cc/app-legacy"), "skip", "excluded");
    assert_eq!(action("cc/web"), "skip", "not included");
    assert!(cc.violations().is_empty(), "{:#?}", cc.violations());
    assert!(gh.violations().is_empty(), "{:#?}", gh.violations());
}
