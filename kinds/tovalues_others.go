//go:build !linux

package kinds

import "fmt"

func toValues(fds []int, ks []Kind, names []string) ([]any, error) {
	vals := make([]any, len(fds))
	for i, f := range fds {
		v, err := ToValue(f, ks[i], nameAt(names, i))
		if err != nil {
			closeValues(vals)
			for _, rest := range fds[i+1:] {
				closeFD(rest)
			}
			return nil, fmt.Errorf("kinds: ToValues: item %d: %w", i, err)
		}
		vals[i] = v
	}
	return vals, nil
}
