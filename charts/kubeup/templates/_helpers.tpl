{{- define "kubeup.name" -}}kubeup-operator{{- end -}}

{{- define "kubeup.labels" -}}
app.kubernetes.io/name: kubeup-operator
app.kubernetes.io/part-of: kubeup
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "kubeup.selector" -}}
app.kubernetes.io/name: kubeup-operator
{{- end -}}

{{- define "kubeup.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The namespaces served, comma separated: watchNamespaces, else the release namespace. */}}
{{- define "kubeup.servedNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- join "," .Values.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}
