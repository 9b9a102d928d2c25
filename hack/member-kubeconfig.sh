#!/usr/bin/env bash
# Writes the kubeconfig the hub uses for a member cluster: the member's API server and CA, and a
# token of the ServiceAccount the chart's member mode made there (TokenRequest, `kubectl create
# token`), so the hub acts in the member with exactly that ServiceAccount's ClusterRole.
#
#   hack/member-kubeconfig.sh --namespace NS --service-account SA --output FILE [options]
#
# Run it with admin rights in the member (--kubeconfig/--context, else kubectl's defaults).
#   --namespace NS          namespace of the member-mode install (the ServiceAccount's)
#   --service-account SA    the hub's ServiceAccount there (NOTES of the install name it)
#   --output FILE           the kubeconfig to write (mode 600; replaced atomically)
#   --name NAME             the member's name: the Cluster object's on the hub (default: member);
#                           names the kubeconfig's entries and the Secret in the printed commands
#   --duration DURATION     lifetime of the token (default: 720h); the member's API server may
#                           cap it (--service-account-max-token-expiration): the expiry printed
#                           is the token's own. Run again before it to rotate.
#   --server URL            the member's API server as the hub reaches it (default: the admin
#                           kubeconfig's, which may be an address only this machine reaches)
#   --hub-namespace NS      the operator's namespace on the hub, for the printed commands
#                           (default: tsunagu-system)
#   --no-verify             do not check that the new kubeconfig may list the member's nodes
# KUBECTL chooses the kubectl binary.
set -euo pipefail

log() { printf '[tsunagu] %s\n' "$*" >&2; }
die() { printf '[tsunagu] error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

namespace="" account="" output="" name="member" duration="720h" server="" verify=1
hub_namespace="tsunagu-system" admin_kubeconfig="" context=""
while (($#)); do
  case $1 in
    --namespace) namespace=${2:?}; shift ;;
    --service-account) account=${2:?}; shift ;;
    --output) output=${2:?}; shift ;;
    --name) name=${2:?}; shift ;;
    --duration) duration=${2:?}; shift ;;
    --server) server=${2:?}; shift ;;
    --hub-namespace) hub_namespace=${2:?}; shift ;;
    --kubeconfig) admin_kubeconfig=${2:?}; shift ;;
    --context) context=${2:?}; shift ;;
    --no-verify) verify=0 ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
  shift
done
[[ -n $namespace && -n $account && -n $output ]] \
  || { log "--namespace, --service-account and --output are required"; usage; }
[[ $name =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name $name: not a DNS label"

KUBECTL=${KUBECTL:-kubectl}
command -v "$KUBECTL" >/dev/null 2>&1 || die "no kubectl ('$KUBECTL'); set KUBECTL"
admin=("$KUBECTL")
[[ -z $admin_kubeconfig ]] || admin+=(--kubeconfig "$admin_kubeconfig")
[[ -z $context ]] || admin+=(--context "$context")

"${admin[@]}" -n "$namespace" get serviceaccount "$account" -o name >/dev/null \
  || die "no ServiceAccount $namespace/$account in the member: install the chart there with --set mode=member first"

# The member's server and CA as the admin's kubeconfig has them (--flatten embeds a CA file).
cluster_field() {
  "${admin[@]}" config view --raw --minify --flatten -o "jsonpath={.clusters[0].cluster.$1}"
}
[[ -n $server ]] || server=$(cluster_field server)
[[ -n $server ]] || die "the admin kubeconfig names no server; give --server"
ca_data=$(cluster_field certificate-authority-data)
tls_server_name=$(cluster_field tls-server-name)
insecure=$(cluster_field insecure-skip-tls-verify)
[[ -n $ca_data || $insecure == true ]] || log "warning: no CA in the admin kubeconfig; the system's CAs will be used"

token=$("${admin[@]}" -n "$namespace" create token "$account" --duration "$duration") \
  || die "could not request a token for $namespace/$account"

# Written aside and moved, never readable by others: it holds a credential.
mkdir -p "$(dirname "$output")"
tmp=$(mktemp "$(dirname "$output")/.member-kubeconfig.XXXXXX")
trap 'rm -f "$tmp"' EXIT
chmod 600 "$tmp"
{
  echo "apiVersion: v1"
  echo "kind: Config"
  echo "clusters:"
  echo "  - name: $name"
  echo "    cluster:"
  echo "      server: \"$server\""
  [[ -z $ca_data ]] || echo "      certificate-authority-data: $ca_data"
  [[ -z $tls_server_name ]] || echo "      tls-server-name: \"$tls_server_name\""
  [[ $insecure != true ]] || echo "      insecure-skip-tls-verify: true"
  echo "users:"
  echo "  - name: $name-hub"
  echo "    user:"
  echo "      token: $token"
  echo "contexts:"
  echo "  - name: $name"
  echo "    context: {cluster: $name, user: $name-hub}"
  echo "current-context: $name"
} >"$tmp"
mv -f "$tmp" "$output"
trap - EXIT

if ((verify)); then
  # can-i warns on stderr that nodes are cluster-scoped; its answer is on stdout. A binding just
  # installed reaches the API server's authorizer moments later: a few tries.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    allowed=$("$KUBECTL" --kubeconfig "$output" auth can-i list nodes 2>/dev/null) || true
    [[ $allowed != yes ]] || break
    sleep 1
  done
  [[ $allowed == yes ]] \
    || die "the new kubeconfig may not list the member's nodes ($allowed); check the install or --server (or --no-verify)"
fi

# The token's own expiry (its JWT "exp" claim), as the API server granted it.
payload=$(cut -d. -f2 <<<"$token" | tr '_-' '/+')
while ((${#payload} % 4)); do payload+="="; done
exp=$(base64 -d <<<"$payload" 2>/dev/null | grep -o '"exp":[0-9]*' | cut -d: -f2) || true
expires=${exp:+$(date -u -d "@$exp" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo "unix time $exp")}
log "wrote $output: ServiceAccount $namespace/$account at $server${expires:+, token valid until $expires}"

secret="$name-kubeconfig"
cat <<EOF
# On the hub: the kubeconfig into a Secret of the operator's namespace (apply: also rotates it),
# readable by the operator once listed in clusters.kubeconfigSecrets (list every member's Secret:
# --set replaces the list).
kubectl -n $hub_namespace create secret generic $secret \\
  --from-file=kubeconfig=$output --dry-run=client -o yaml | kubectl apply -f -
helm upgrade tsunagu charts/tsunagu -n $hub_namespace --reuse-values \\
  --set 'clusters.kubeconfigSecrets={$secret}'
# and a Cluster object naming it:
#   kind: Cluster, metadata.name: $name, spec.kubeconfigSecretRef.name: $secret
EOF
