// The pause binary of the kubeup bundle's pause image.
module kubeup.dev/bundle/pause

go 1.24.0
