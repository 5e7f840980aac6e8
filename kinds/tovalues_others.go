//go:build !linux

package kinds

import "fmt"

func toValues(fds []int, ks []Kind, names []string, check bool) ([]any, error) {
	vals := make([]any, len(fds))
	for i, f := range fds {
		v, err := ToValue(f, ks[i], nameAt(names, i))
		if err != nil {
			closeValues(vals)
			for _, rest := range fds[i+1:] {
				closeFD(rest)
			}
			name := "ToValuesVerified"
			if check {
				name = "ToValues"
			}
			return nil, fmt.Errorf("kinds: %s: item %d: %w", name, i, err)
		}
		vals[i] = v
	}
	return vals, nil
}
