# GPU nodes: node_count identical instances in one cluster placement group (lowest latency
# between nodes), each with every EFA interface its type offers. User data starts the training
# image; node 0 also runs the Prefect worker of the `gpu` pool.

locals {
  # GPUs and EFA network cards per instance type (AWS accelerated-computing instance specs).
  instance_specs = {
    "p4d.24xlarge"  = { gpus = 8, efa_interfaces = 4 }
    "p4de.24xlarge" = { gpus = 8, efa_interfaces = 4 }
    "p5.48xlarge"   = { gpus = 8, efa_interfaces = 32 }
    "p5e.48xlarge"  = { gpus = 8, efa_interfaces = 32 }
    "p5en.48xlarge" = { gpus = 8, efa_interfaces = 16 }
    "g5.48xlarge"   = { gpus = 8, efa_interfaces = 1 }
    "g6e.48xlarge"  = { gpus = 8, efa_interfaces = 4 }
  }
  spec     = lookup(local.instance_specs, var.instance_type, { gpus = 0, efa_interfaces = 0 })
  registry = split("/", var.training_image)[0]
  # arn:aws:ecr:REGION:ACCOUNT:repository/REPO of the training image
  image_repository_arn = format(
    "arn:aws:ecr:%s:%s:repository/%s",
    split(".", local.registry)[3],
    split(".", local.registry)[0],
    split(":", join("/", slice(split("/", var.training_image), 1, length(split("/", var.training_image)))))[0],
  )
}

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_ssm_parameter" "dlami" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
}

resource "aws_placement_group" "this" {
  name     = "${var.name}-gpu"
  strategy = "cluster"
}

resource "aws_launch_template" "gpu" {
  name_prefix   = "${var.name}-gpu-"
  image_id      = coalesce(var.ami_id, try(data.aws_ssm_parameter.dlami[0].value, null))
  instance_type = var.instance_type
  ebs_optimized = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only: no credential theft via SSRF
    http_put_response_hop_limit = 1          # containers use the host network, so 1 suffices
  }

  monitoring {
    enabled = true
  }

  placement {
    group_name = aws_placement_group.this.name
  }

  # One interface per network card; the first carries IP traffic too (device 0), the others
  # are extra EFA bandwidth (device 1 on their card), as AWS documents for p5.
  dynamic "network_interfaces" {
    for_each = range(local.spec.efa_interfaces)
    content {
      network_card_index          = network_interfaces.value
      device_index                = network_interfaces.value == 0 ? 0 : 1
      interface_type              = "efa"
      subnet_id                   = var.subnet_id
      security_groups             = [var.security_group_id]
      associate_public_ip_address = false
      delete_on_termination       = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Project = var.name }
  }

  lifecycle {
    precondition {
      condition     = contains(keys(local.instance_specs), var.instance_type)
      error_message = "instance_type ${var.instance_type} has no GPU/EFA entry in local.instance_specs (modules/gpu_nodes/main.tf): add its GPUs and EFA interfaces there."
    }
  }
}

resource "aws_instance" "node" {
  count = var.node_count

  launch_template {
    id      = aws_launch_template.gpu.id
    version = aws_launch_template.gpu.latest_version
  }

  iam_instance_profile = aws_iam_instance_profile.node.name

  root_block_device {
    volume_size           = var.root_volume_gib
    volume_type           = "gp3"
    encrypted             = true
    kms_key_id            = var.kms_key_arn
    delete_on_termination = true
  }

  # Repeated from the launch template so each node's settings are visible (and scanned) here.
  ebs_optimized = true
  monitoring    = true
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  user_data_base64 = base64encode(templatefile("${path.module}/user_data.sh.tftpl", {
    node_index          = count.index
    region              = data.aws_region.current.name
    registry            = local.registry
    image               = var.training_image
    ssh_key_parameter   = var.cluster_ssh_key_parameter
    mlflow_tracking_uri = var.mlflow_tracking_uri
    prefect_api_url     = var.prefect_api_url
    work_pool           = var.work_pool
    fsx_dns_name        = var.fsx_dns_name
    fsx_mount_name      = var.fsx_mount_name
  }))

  tags = { Name = "${var.name}-gpu-${count.index}" }
}

# The instance profile: read and write the project's buckets, pull the training image, read
# the cluster SSH key. Nothing else.
module "assume_ec2" {
  source  = "../assume_role_policy"
  service = "ec2.amazonaws.com"
}

data "aws_iam_policy_document" "node" {
  statement {
    sid       = "ListProjectBuckets"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = var.bucket_arns
  }
  statement {
    sid       = "ReadWriteProjectObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = [for arn in var.bucket_arns : "${arn}/*"]
  }
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
  statement {
    sid       = "PullTrainingImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [local.image_repository_arn]
  }
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"] # account-wide by AWS design: no resource-level form
    resources = ["*"]
  }
  statement {
    sid     = "ReadClusterSshKey"
    actions = ["ssm:GetParameter"]
    resources = [
      "arn:aws:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter${var.cluster_ssh_key_parameter}",
    ]
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-gpu-node"
  assume_role_policy = module.assume_ec2.json
}

resource "aws_iam_role_policy" "node" {
  name   = "project-buckets-only"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

resource "aws_iam_instance_profile" "node" {
  name = "${var.name}-gpu-node"
  role = aws_iam_role.node.name
}
