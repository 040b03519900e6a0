// k8scheck validates Kubernetes manifests offline against the real API types:
// every document is decoded strictly (unknown or misspelt fields, wrong value
// types and unparsable quantities are errors) into the Go type its
// apiVersion/kind names, from k8s.io/api and KEDA's own API package. Nothing is
// downloaded at run time. On success it prints one JSON line per object
// (file, kind, name); on failure every error, and exits 1.
//
// Usage: k8scheck FILE.yaml...
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

type meta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, true
	case "batch/v1/Job":
		return &batchv1.Job{}, true
	case "v1/Namespace":
		return &corev1.Namespace{}, true
	case "keda.sh/v1alpha1/ScaledObject":
		return &kedav1alpha1.ScaledObject{}, true
	case "keda.sh/v1alpha1/TriggerAuthentication":
		return &kedav1alpha1.TriggerAuthentication{}, true
	}
	return nil, false
}

func checkFile(path string) ([]map[string]string, []string) {
	var found []map[string]string
	var errs []string
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, []string{err.Error()}
	}
	reader := yaml.NewYAMLReader(bufioReader(data))
	for index := 0; ; index++ {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", path, err))
			break
		}
		if len(bytes.TrimSpace(doc)) == 0 || bytes.Equal(bytes.TrimSpace(doc), []byte("---")) {
			continue
		}
		var m meta
		if err := sigsyaml.Unmarshal(doc, &m); err != nil {
			errs = append(errs, fmt.Sprintf("%s doc %d: %v", path, index, err))
			continue
		}
		where := fmt.Sprintf("%s doc %d (%s %s)", path, index, m.Kind, m.Metadata.Name)
		if m.Metadata.Name == "" {
			errs = append(errs, where+": metadata.name is empty")
		}
		obj, ok := newObject(m.APIVersion, m.Kind)
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: unknown apiVersion/kind %s/%s", where, m.APIVersion, m.Kind))
			continue
		}
		if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		found = append(found, map[string]string{"file": path, "kind": m.Kind, "name": m.Metadata.Name})
	}
	return found, errs
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8scheck FILE.yaml...")
		os.Exit(2)
	}
	var errs []string
	for _, path := range os.Args[1:] {
		found, fileErrs := checkFile(path)
		errs = append(errs, fileErrs...)
		for _, f := range found {
			line, _ := json.Marshal(f)
			fmt.Println(string(line))
		}
	}
	for _, e := range errs {
		fmt.Fprintln(os.Stderr, "k8scheck:", e)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
}
