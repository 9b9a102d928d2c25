{{/* Names and labels shared by every template. */}}

{{- define "tsunagu.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: the release name, plus the chart name unless it is in it. */}}
{{- define "tsunagu.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tsunagu.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tsunagu.labels" -}}
helm.sh/chart: {{ include "tsunagu.chart" . }}
app.kubernetes.io/name: {{ include "tsunagu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tsunagu
{{- end -}}

{{/* Selector labels of the operator's pods; immutable once a Deployment exists. */}}
{{- define "tsunagu.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "tsunagu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Selector labels of one region's probe pods; call with (dict "root" $ "region" $region). */}}
{{- define "tsunagu.probeSelectorLabels" -}}
app.kubernetes.io/name: {{ include "tsunagu.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: probe
tsunagu.io/probe-region: {{ .region }}
{{- end -}}

{{- define "tsunagu.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tsunagu.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tsunagu.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Name of one region's probe DaemonSet and Service: <fullname>-probe-<region>. */}}
{{- define "tsunagu.probeName" -}}
{{- printf "%s-probe-%s" (include "tsunagu.fullname" .root) .region | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tsunagu.probePeersName" -}}
{{- printf "%s-probe-peers" (include "tsunagu.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The restricted Pod Security Standard, for every container of the chart: no root, no privilege
escalation, no capabilities, the runtime's default seccomp profile, an immutable root filesystem.
*/}}
{{- define "tsunagu.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "tsunagu.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The Lease the replicas elect a leader on, in the release namespace. */}}
{{- define "tsunagu.leaseName" -}}
{{- default (include "tsunagu.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* The ServiceAccount the hub acts as in a member cluster (mode: member). */}}
{{- define "tsunagu.memberServiceAccountName" -}}
{{- default (printf "%s-hub" (include "tsunagu.fullname" .) | trunc 63 | trimSuffix "-") .Values.member.serviceAccountName -}}
{{- end -}}
